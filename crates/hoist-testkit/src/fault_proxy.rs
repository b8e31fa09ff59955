//! A fault-injecting HTTP proxy to put in front of a real [`crate::TestRegistry`].
//!
//! It stands for the load balancers, gateways and registry front ends that
//! real pushes go through (nginx, cloud gateways, ECR's and GHCR's own
//! front ends), whose misbehaviour no local registry reproduces: gateway
//! errors, rate limits with `Retry-After`, connections dropped in the middle
//! of a request body, body-size limits, ECR's 201 with a stale `Range`,
//! GHCR's 416 for chunks above 4 MiB, redirects to another host, answer
//! headers changed or added (a wrong `Docker-Content-Digest`, a `Warning`),
//! answers served in the registry's place (an oversized manifest), and the
//! hostile: endless or trickling bodies and requests never answered.
//! Everything it does not fault it forwards unchanged to the real registry,
//! which stays the judge of what was stored.
//!
//! Each request body is read whole before forwarding (test blobs are small),
//! so a request the proxy drops never reaches the registry, as when a
//! connection breaks between a client and a load balancer. Every request is
//! logged with its method, path, selected headers and the status returned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to a matching request instead of forwarding it plainly.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and an HTML body, as a gateway does.
    Status(u16),
    /// Answer 429 `TOOMANYREQUESTS` with this `Retry-After` value.
    TooManyRequests { retry_after: String },
    /// Answer this status with a registry JSON error body of `code`.
    ErrorCode { status: u16, code: String, message: String },
    /// Read this many bytes of the body, then close the connection without
    /// answering; the registry sees nothing.
    DropBodyAfter(usize),
    /// Answer 413 when the body is larger than this, as a proxy's
    /// `client_max_body_size` does; forward otherwise.
    TooLarge { above: usize },
    /// Forward; answer a successful PATCH with 201 and the `Range` of the
    /// session's first PATCH, as ECR does.
    StaleRange201,
    /// Answer 416 to a PATCH with `Content-Range` whose body is larger than
    /// this, as GHCR does above 4 MiB; forward otherwise.
    ChunkCap { max: usize },
    /// Forward; send only this many bytes of the answer's body (with its
    /// full `Content-Length`), then break the connection.
    TruncateResponse(usize),
    /// Forward; turn an absolute `Location` into a relative one (path and
    /// query), as some registries send.
    RelativeLocation,
    /// Forward; add `OCI-Chunk-Min-Length` to the answer of a POST that
    /// opens an upload.
    ChunkMinLength(u64),
    /// Answer 307 to the same path and query on `base` (e.g. another proxy).
    RedirectTo { base: String },
    /// Forward; replace header `name` of the answer with `value` (e.g. a
    /// `Docker-Content-Digest` that does not match what was stored, as a
    /// broken front end or a tampering middlebox would send).
    SetHeader { name: String, value: String },
    /// Forward; add header `name: value` to the answer, keeping any already
    /// there (e.g. a `Warning`, as a registry deprecating something sends).
    AddHeader { name: String, value: String },
    /// Forward; drop header `name` from the answer (e.g. the `Location` of
    /// a manifest PUT, which not every registry sends).
    RemoveHeader { name: String },
    /// Answer `status` with `headers` and `body` streamed without a
    /// `Content-Length` unless `headers` has one, as a front end serving
    /// something the registry never stored (an oversized manifest).
    Serve { status: u16, headers: Vec<(String, String)>, body: Bytes },
    /// Answer `status` with a body that never ends (64 KiB pieces as fast
    /// as the client takes them), as a broken or hostile front end might.
    EndlessBody { status: u16 },
    /// Answer `status` and then one byte of body every `every_ms`, forever:
    /// a connection that is never idle long enough for a read timeout.
    TrickleBody { status: u16, every_ms: u64 },
    /// Accept the request, read nothing of its body and never answer, as a
    /// registry that hangs does.
    Stall,
    /// Forward the request (the registry acts on it), then close the
    /// connection without answering: an answer lost on its way back.
    LoseAnswer,
    /// Wait this long, then forward: a slow registry or link.
    Delay { ms: u64 },
}

/// When a [`Fault`] applies: method and path fragment, after `skip` matching
/// requests, for `times` requests (`None`: every one).
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: Option<String>,
    pub skip: usize,
    pub times: Option<usize>,
    pub fault: Fault,
}

impl Rule {
    /// `fault` for every request.
    pub fn always(fault: Fault) -> Self {
        Self { method: None, path_contains: None, skip: 0, times: None, fault }
    }

    /// `fault` for the first `n` requests.
    pub fn first(n: usize, fault: Fault) -> Self {
        Self { times: Some(n), ..Self::always(fault) }
    }

    /// Only requests with this method.
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path contains `fragment`.
    #[must_use]
    pub fn path(mut self, fragment: &str) -> Self {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    /// Let the first `n` matching requests through untouched.
    #[must_use]
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Body bytes received (all of them unless the request was dropped).
    pub body_len: usize,
    pub content_length: Option<String>,
    pub content_range: Option<String>,
    /// The `Range` header of a GET.
    pub range: Option<String>,
    pub transfer_encoding: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub authorization: bool,
    /// What the client got; 0 for a dropped connection.
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(Rule, usize)>,
    log: Vec<Logged>,
    /// Every upload `_state` value the registry handed out.
    states: Vec<String>,
    /// Upload path → the `Range` of its first PATCH answer.
    first_ranges: HashMap<String, String>,
}

/// A running proxy on `127.0.0.1:<port>`; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts a proxy to the registry on `127.0.0.1:<upstream_port>`.
    pub fn start(upstream_port: u16, rules: Vec<Rule>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fault proxy");
        // Bound with std and handed over, so that starting works inside a test's own runtime too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).expect("a tokio listener")
        };
        let state =
            Arc::new(Mutex::new(State { rules: rules.into_iter().map(|r| (r, 0)).collect(), ..State::default() }));
        let shared = Arc::clone(&state);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(Arc::clone(&state), port, upstream_port, request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, state, runtime: Some(runtime) }
    }

    /// `127.0.0.1:<port>`: the registry part of a reference through the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().expect("proxy state").log.clone()
    }

    /// Requests with `method` whose path contains `path_fragment`.
    pub fn count(&self, method: &str, path_fragment: &str) -> usize {
        self.log().iter().filter(|l| l.method == method && l.path.contains(path_fragment)).count()
    }

    /// Requests that got a fault.
    pub fn faulted(&self) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.fault.is_some()).collect()
    }

    /// Every upload `_state` the registry handed out through the proxy.
    pub fn upload_states(&self) -> Vec<String> {
        self.state.lock().expect("proxy state").states.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;
pub(crate) type Reply = Response<Body>;

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Returning `Err` makes hyper close the connection without an answer.
async fn handle(
    state: Arc<Mutex<State>>,
    port: u16,
    upstream: u16,
    request: Request<Incoming>,
) -> Result<Reply, std::io::Error> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut logged = Logged {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body_len: 0,
        content_length: header("content-length"),
        content_range: header("content-range"),
        range: header("range"),
        transfer_encoding: header("transfer-encoding"),
        content_type: header("content-type"),
        accept: header("accept"),
        authorization: request.headers().contains_key("authorization"),
        status: 0,
        fault: None,
    };
    let fault = pick_fault(&state, &method, &path);
    let (parts, mut body) = request.into_parts();

    if let Some(Fault::Stall) = &fault {
        logged.fault = Some("stalled".into());
        record(&state, logged);
        // Held until the client gives up (or the proxy is dropped).
        return std::future::pending().await;
    }

    if let Some(Fault::DropBodyAfter(limit)) = &fault {
        let mut received = 0;
        while received < *limit {
            match body.frame().await {
                Some(Ok(frame)) => received += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
        logged.body_len = received;
        logged.fault = Some(format!("dropped after {received} body bytes"));
        record(&state, logged);
        return Err(std::io::Error::other("fault: connection dropped"));
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            logged.fault = Some(format!("client body failed: {error}"));
            record(&state, logged);
            return Err(std::io::Error::other(error));
        }
    };
    logged.body_len = body.len();

    if let Some(Fault::Delay { ms }) = &fault {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
    if let Some(Fault::LoseAnswer) = &fault {
        let lost = forward(parts, body, upstream).await?;
        logged.fault = Some(format!("answer {} lost", lost.status().as_u16()));
        record(&state, logged);
        return Err(std::io::Error::other("fault: answer lost"));
    }
    let local = fault.as_ref().and_then(|fault| local_reply(fault, &method, &path, &query, &logged, body.len()));
    let reply = match local {
        Some(reply) => {
            logged.fault = fault.as_ref().map(|f| format!("{f:?}"));
            reply
        }
        None => forward_and_edit(&state, fault.as_ref(), parts, body, (upstream, port), &mut logged).await?,
    };
    if let Some(location) = reply.headers().get("location").and_then(|v| v.to_str().ok())
        && let Some(value) = url_state(location)
    {
        state.lock().expect("proxy state").states.push(value);
    }
    logged.status = reply.status().as_u16();
    record(&state, logged);
    Ok(reply)
}

/// Forwards to the registry and applies the faults that edit its answer.
async fn forward_and_edit(
    state: &Mutex<State>,
    fault: Option<&Fault>,
    parts: hyper::http::request::Parts,
    body: Bytes,
    (upstream, port): (u16, u16),
    logged: &mut Logged,
) -> Result<Reply, std::io::Error> {
    let (method, path) = (logged.method.clone(), logged.path.clone());
    let mut reply = forward(parts, body, upstream).await?;
    rewrite_location(&mut reply, upstream, port);
    if matches!(fault, Some(Fault::StaleRange201)) && method == "PATCH" && reply.status() == StatusCode::ACCEPTED {
        let range = reply.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut guard = state.lock().expect("proxy state");
        let first_range = guard.first_ranges.entry(path.clone()).or_insert_with(|| range.unwrap_or_default()).clone();
        drop(guard);
        *reply.status_mut() = StatusCode::CREATED;
        reply.headers_mut().insert("range", first_range.parse().expect("a header value"));
        logged.fault = Some("201 with a stale Range".into());
    }
    if let (Some(Fault::RelativeLocation), Some(location)) =
        (&fault, reply.headers().get("location").and_then(|v| v.to_str().ok()))
        && let Some(rest) = location.strip_prefix("http://")
        && let Some(slash) = rest.find('/')
    {
        let relative = rest[slash..].to_owned();
        reply.headers_mut().insert("location", relative.parse().expect("a header value"));
        logged.fault = Some("relative Location".into());
    }
    if let Some(Fault::ChunkMinLength(min)) = fault
        && method == "POST"
    {
        reply.headers_mut().insert("oci-chunk-min-length", (*min).into());
        logged.fault = Some(format!("OCI-Chunk-Min-Length: {min}"));
    }
    edit_headers(fault, &mut reply, logged);
    if let Some(Fault::TruncateResponse(keep)) = fault {
        reply = truncate(reply, *keep).await;
        logged.fault = Some(format!("answer cut after {keep} bytes"));
    }
    Ok(reply)
}

/// The answer the proxy gives itself for `fault`, if it applies.
fn local_reply(
    fault: &Fault,
    method: &str,
    path: &str,
    query: &str,
    logged: &Logged,
    body_len: usize,
) -> Option<Reply> {
    match fault {
        Fault::Status(status) => Some(html(*status)),
        Fault::TooManyRequests { retry_after } => {
            let mut reply = json_error(429, "TOOMANYREQUESTS", "slow down");
            reply.headers_mut().insert("retry-after", retry_after.parse().expect("a header value"));
            Some(reply)
        }
        Fault::ErrorCode { status, code, message } => Some(json_error(*status, code, message)),
        Fault::TooLarge { above } if body_len > *above => Some(html(413)),
        Fault::ChunkCap { max } if method == "PATCH" && logged.content_range.is_some() && body_len > *max => {
            Some(json_error(
                416,
                "REQUESTED_RANGE_NOT_SATISFIABLE",
                "the request body is too large and exceeds the maximum permissible limit of 4.00MiB",
            ))
        }
        Fault::RedirectTo { base } => {
            let target = format!(
                "{}{path}{}",
                base.trim_end_matches('/'),
                if query.is_empty() { String::new() } else { format!("?{query}") }
            );
            let mut reply = Response::new(full(Bytes::new()));
            *reply.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            reply.headers_mut().insert("location", target.parse().expect("a header value"));
            Some(reply)
        }
        Fault::EndlessBody { status } => {
            let piece = Bytes::from(vec![b'x'; 64 * 1024]);
            let frames = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(Frame::data(piece.clone())));
            let mut reply = Response::new(StreamBody::new(frames).boxed());
            *reply.status_mut() = StatusCode::from_u16(*status).expect("a valid status");
            Some(reply)
        }
        Fault::TrickleBody { status, every_ms } => {
            let every = std::time::Duration::from_millis(*every_ms);
            let frames = futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(every).await;
                Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))), ()))
            });
            let mut reply = Response::new(StreamBody::new(frames).boxed());
            *reply.status_mut() = StatusCode::from_u16(*status).expect("a valid status");
            Some(reply)
        }
        Fault::Serve { status, headers, body } => {
            // A stream of one piece has no known length: hyper sends it
            // chunked unless `headers` carries a Content-Length.
            let piece =
                futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(Frame::data(body.clone()))));
            let mut reply = Response::new(StreamBody::new(piece).boxed());
            *reply.status_mut() = StatusCode::from_u16(*status).expect("a valid status");
            for (name, value) in headers {
                reply.headers_mut().append(header_name(name), value.parse().expect("a header value"));
            }
            Some(reply)
        }
        _ => None,
    }
}

fn pick_fault(state: &Mutex<State>, method: &str, path: &str) -> Option<Fault> {
    let mut state = state.lock().expect("proxy state");
    for (rule, seen) in &mut state.rules {
        if !rule.matches(method, path) {
            continue;
        }
        *seen += 1;
        let index = *seen - 1;
        if index < rule.skip {
            continue;
        }
        if rule.times.is_some_and(|times| index - rule.skip >= times) {
            continue;
        }
        return Some(rule.fault.clone());
    }
    None
}

fn record(state: &Mutex<State>, logged: Logged) {
    state.lock().expect("proxy state").log.push(logged);
}

/// Sends a request whose body was read whole to the registry on `upstream`,
/// and reads its answer whole.
pub(crate) async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: u16,
) -> Result<Reply, std::io::Error> {
    let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream))).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut request = Request::from_parts(parts, Full::new(body.clone()));
    // The body is whole now: send it with a length, not chunked.
    request.headers_mut().remove("transfer-encoding");
    request.headers_mut().insert("content-length", body.len().into());
    let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    parts.headers.remove("transfer-encoding");
    parts.headers.remove("connection");
    Ok(Response::from_parts(parts, full(body)))
}

async fn truncate(reply: Reply, keep: usize) -> Reply {
    let (parts, body) = reply.into_parts();
    let bytes = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    let prefix = bytes.slice(..keep.min(bytes.len()));
    // hyper drops unflushed output when a body fails: pause between the
    // prefix and the failure so that the prefix reaches the client.
    let frames = futures_util::stream::unfold(Some(prefix), |prefix| async move {
        match prefix {
            Some(prefix) => Some((Ok(Frame::data(prefix)), None)),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Some((Err(std::io::Error::other("fault: answer cut")), None))
            }
        }
    });
    Response::from_parts(parts, StreamBody::new(frames).boxed())
}

/// Locations naming the registry directly are pointed back at the proxy.
fn rewrite_location(reply: &mut Reply, upstream: u16, port: u16) {
    let Some(location) = reply.headers().get("location").and_then(|v| v.to_str().ok()) else { return };
    let rewritten = location.replace(&format!("127.0.0.1:{upstream}"), &format!("127.0.0.1:{port}"));
    reply.headers_mut().insert("location", rewritten.parse().expect("a header value"));
}

/// [`Fault::SetHeader`], [`Fault::AddHeader`] and [`Fault::RemoveHeader`] on a forwarded answer.
fn edit_headers(fault: Option<&Fault>, reply: &mut Reply, logged: &mut Logged) {
    match fault {
        Some(Fault::SetHeader { name, value }) => {
            reply.headers_mut().insert(header_name(name), value.parse().expect("a header value"));
            logged.fault = Some(format!("{name}: {value}"));
        }
        Some(Fault::AddHeader { name, value }) => {
            reply.headers_mut().append(header_name(name), value.parse().expect("a header value"));
            logged.fault = Some(format!("added {name}: {value}"));
        }
        Some(Fault::RemoveHeader { name }) => {
            reply.headers_mut().remove(header_name(name));
            logged.fault = Some(format!("removed {name}"));
        }
        _ => {}
    }
}

fn header_name(name: &str) -> hyper::header::HeaderName {
    hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name")
}

fn url_state(location: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("_state=")).map(str::to_owned)
}

fn html(status: u16) -> Reply {
    let mut reply = Response::new(full(Bytes::from(format!(
        "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>fault-proxy</center></body></html>"
    ))));
    *reply.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    reply.headers_mut().insert("content-type", "text/html".parse().expect("a header value"));
    reply
}

fn json_error(status: u16, code: &str, message: &str) -> Reply {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
    let mut reply = Response::new(full(Bytes::from(body)));
    *reply.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    reply.headers_mut().insert("content-type", "application/json".parse().expect("a header value"));
    reply
}
