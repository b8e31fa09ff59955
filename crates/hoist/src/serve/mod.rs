//! `hoist serve`: a web page and an HTTP API that stream an uploaded archive
//! into a registry through the same library call as `hoist push -`.
//!
//! - [`api`]: `PUT`/`POST /api/push`, the request body read as an
//!   [`ArchiveInput::Stream`](hoist_archive::ArchiveInput) while it arrives,
//!   pushed by [`hoist_transfer::push_archive`], answered with the JSON of
//!   `hoist push --output json`;
//! - [`events`]: each push's progress as server-sent events for the page;
//! - `page/`: the page, plain HTML, CSS and JavaScript compiled into the binary.
//!
//! The accept loop is hyper's (so TLS and graceful shutdown are ours to
//! decide): every connection has a header deadline, every upload an idle
//! deadline, and on SIGTERM the service stops accepting, lets uploads in
//! flight finish for a grace period, then cancels what is left.

mod api;
mod events;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hoist_oci::RegistryTarget;
use hoist_registry::Connection;
use hoist_transfer::{PushOptions, PushRun};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::failure::Local;

/// How long a client may take to send a request's headers.
const HEADER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(15);
/// Connections open at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 512;

/// What the service is allowed to do, from `hoist serve`'s flags.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    /// The registries uploads may go to; the first takes archives pushed without `dest`.
    pub(crate) registries: Vec<RegistryTarget>,
    pub(crate) connection: Connection,
    pub(crate) options: PushOptions,
    /// The largest body accepted; `None`: no limit.
    pub(crate) max_size: Option<u64>,
    pub(crate) max_uploads: usize,
    /// An upload whose client sends nothing for this long fails.
    pub(crate) idle_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    /// Host names the service answers to besides IP addresses and
    /// `localhost` (`--public-name`): a request for any other name is refused,
    /// which keeps DNS rebinding from turning a page elsewhere into a local client.
    pub(crate) public_names: Vec<String>,
    /// Harbor projects: made on demand with the uploader's credentials, as `hoist push` does.
    pub(crate) provision: crate::cli::ProvisionArgs,
}

/// What every request handler shares.
pub(crate) struct AppState {
    config: ServeConfig,
    uploads: Arc<Semaphore>,
    /// Pushes in flight, to cancel at shutdown.
    running: Mutex<Vec<PushRun>>,
    events: events::Channels,
    /// Becomes true when shutdown starts: idle event streams end.
    shutting_down: watch::Receiver<bool>,
}

impl AppState {
    fn running(&self) -> std::sync::MutexGuard<'_, Vec<PushRun>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a push that ended.
    fn forget(&self, run: &PushRun) {
        let mut running = self.running();
        if let Some(index) = running.iter().position(|r| r.same_as(run)) {
            running.swap_remove(index);
        }
    }
}

/// The service's routes over `state`.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page_html))
        .route("/app.js", get(page_js))
        .route("/app.css", get(page_css))
        .route("/healthz", get(healthz))
        .route("/api/registries", get(registries))
        .route("/api/events", get(events::stream))
        .route("/api/check", post(api::check))
        .route("/api/push", put(api::push).post(api::push))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), same_origin_only))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub(crate) async fn run(config: ServeConfig, listen: &str, tls: Option<(&Path, &Path)>) -> anyhow::Result<()> {
    let acceptor = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let listener = TcpListener::bind(listen).await.map_err(|error| Local {
        message: format!("cannot listen on {listen}: {error}"),
        hint: "choose another --listen address (ADDR:PORT), or stop what is using this one".into(),
    })?;
    let address = listener.local_addr().context("reading the listening address")?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let targets: Vec<&str> = config.registries.iter().map(RegistryTarget::registry).collect();
    eprintln!("hoist serve: listening on {scheme}://{address}/ for pushes to {}", targets.join(", "));

    let grace = config.shutdown_grace;
    let (stop, shutting_down) = watch::channel(false);
    let state = Arc::new(AppState {
        uploads: Arc::new(Semaphore::new(config.max_uploads)),
        config,
        running: Mutex::default(),
        events: events::Channels::default(),
        shutting_down,
    });
    let app = router(Arc::clone(&state));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let signal = crate::interrupt::signal();
    tokio::pin!(signal);
    let signal = loop {
        tokio::select! {
            signal = &mut signal => break signal,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: wait rather than spin.
                        eprintln!("hoist serve: cannot accept a connection: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else { continue };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                // The router as hyper's service for this connection, every request knowing its peer.
                let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new))
                });
                let builder = connection_builder();
                match &acceptor {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        let watched = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = watched.await;
                            drop(slot);
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await
                            else { return };
                            let connection = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(connection).await;
                            drop(slot);
                        });
                    }
                }
            }
        }
    };
    drop(listener);
    let _ = stop.send(true);
    let in_flight = state.running().len();
    eprintln!(
        "hoist serve: {signal}: no longer accepting; {in_flight} upload(s) in flight get {}s to finish",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        let runs: Vec<PushRun> = state.running().clone();
        for run in &runs {
            run.interrupt();
        }
        for run in &runs {
            run.clean_up().await;
        }
        eprintln!("hoist serve: cancelled {} upload(s) still in flight", runs.len());
    }
    eprintln!("hoist serve: stopped");
    Ok(())
}

fn connection_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_DEADLINE).keep_alive(true);
    builder
}

/// The client's address, for the access log.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

/// What a handler tells the access log about its request beyond the status.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogNote(pub(crate) String);

/// One line per request on stderr: when, who, what, the answer, how long.
/// Never a credential; the path and what a handler notes are escaped, so
/// nothing a client sends can start a line of its own.
async fn access_log(request: Request, next: Next) -> Response {
    let mut line = LogLine {
        started: Instant::now(),
        peer: request.extensions().get::<Peer>().map_or_else(|| "-".to_owned(), |p| p.0.to_string()),
        method: request.method().to_string(),
        path: request.uri().path().escape_debug().to_string(),
        done: false,
    };
    let response = next.run(request).await;
    let note = response.extensions().get::<LogNote>().map(|n| n.0.as_str()).unwrap_or_default();
    line.write(&response.status().as_u16().to_string(), note);
    line.done = true;
    response
}

/// A request's log line, written when it is answered, or (status 499, as
/// nginx says) when the client went away first and its handler was dropped.
struct LogLine {
    started: Instant,
    peer: String,
    method: String,
    path: String,
    done: bool,
}

impl LogLine {
    fn write(&self, status: &str, note: &str) {
        let note = if note.is_empty() { String::new() } else { format!(" {}", note.escape_debug()) };
        eprintln!(
            "{} {} {} {} {status} {:.3}s{note}",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
            self.peer,
            self.method,
            self.path,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.done {
            self.write("499", "the client went away before the answer");
        }
    }
}

/// A browser's request from another site's page is refused: it would carry
/// the user's remembered credentials. Requests without `Origin` (curl, the
/// page's own GETs) pass; the registry still checks the credentials.
async fn same_origin_only(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(host) = foreign_host(request.headers(), &state.config.public_names) {
        return api::error_response(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this service does not answer to the name {}", host.escape_debug()),
            "reach it by its IP address, localhost, or a name given to it with --public-name",
            None,
        );
    }
    if let Some(refusal) = cross_site(request.headers()) {
        return api::error_response(
            StatusCode::FORBIDDEN,
            &refusal,
            "open the page this service serves at / and push from there",
            None,
        );
    }
    next.run(request).await
}

/// The `Host` a request names when it is not one this service answers to:
/// an IP address, `localhost`, or a `--public-name`. A page elsewhere that
/// rebinds its own name to this address still sends its own name.
fn foreign_host(headers: &HeaderMap, public_names: &[String]) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().unwrap_or("?");
    if let Some(bracketed) = host.strip_prefix('[') {
        let address = bracketed.split(']').next().unwrap_or_default();
        return address.parse::<std::net::Ipv6Addr>().is_err().then(|| host.to_owned());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let known = name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || public_names.iter().any(|public| {
            let public = public.rsplit_once(':').map_or(public.as_str(), |(name, _port)| name);
            public.eq_ignore_ascii_case(name)
        });
    (!known).then(|| host.to_owned())
}

/// Why the request comes from another site, if it does.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return Some("requests from other sites' pages are refused".into());
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host =
        origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest.trim_end_matches('/'));
    if origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host)) {
        None
    } else {
        Some(format!(
            "a request from {} is refused: only this service's own page may push",
            String::from_utf8_lossy(origin.as_bytes())
        ))
    }
}

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/app.css");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page_html() -> Response {
    page("text/html; charset=utf-8", PAGE_HTML)
}

async fn page_js() -> Response {
    page("text/javascript; charset=utf-8", PAGE_JS)
}

async fn page_css() -> Response {
    page("text/css; charset=utf-8", PAGE_CSS)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let uploads = state.running().len();
    let status = if *state.shutting_down.borrow() { "stopping" } else { "ok" };
    axum::Json(serde_json::json!({ "status": status, "uploads": uploads })).into_response()
}

/// The registries the page may offer.
async fn registries(State(state): State<Arc<AppState>>) -> Response {
    let names: Vec<String> = state.config.registries.iter().map(|r| r.registry().to_owned()).collect();
    axum::Json(serde_json::json!({ "registries": names })).into_response()
}

/// A TLS acceptor for the PEM certificate chain and key.
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let unreadable = |path: &Path, what: &str, error: &dyn std::fmt::Display| Local {
        message: format!("cannot read the {what} {}: {error}", path.display()),
        hint: "--tls-cert takes a PEM certificate chain, --tls-key its PEM private key".into(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| unreadable(cert, "certificate", &e))?;
    if certs.is_empty() {
        return Err(unreadable(cert, "certificate", &"no certificate in it").into());
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, "private key", &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|error| Local {
            message: format!("cannot use {} with {}: {error}", cert.display(), key.display()),
            hint: "the key must be the certificate's own".into(),
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
