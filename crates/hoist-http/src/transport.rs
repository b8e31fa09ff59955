use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::error::error_chain;
use crate::{HttpError, HttpErrorKind, RetryObserver, RetryPolicy};

/// Docker's per-registry TLS directory.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";
/// How long a request or answer may go without progress, unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the user asked to reach registries, before knowing which ones: the
/// network flags every command shares.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Plain HTTP to every registry named (`--plain-http`).
    pub plain_http: bool,
    /// HTTPS even to loopback registries named (`--https`).
    pub https: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    pub ca_certs: Vec<PathBuf>,
    pub certs_dir: Option<PathBuf>,
    /// See [`TransportOptions::timeout`]; one request is retried for at
    /// most four times this.
    pub timeout: Duration,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            plain_http: false,
            https: false,
            insecure: false,
            ca_certs: Vec::new(),
            certs_dir: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Settings that apply to every server a [`Transport`] talks to.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Servers (`host[:port]`) to reach over plain HTTP. Loopback servers
    /// are too, as with docker, unless listed in `https`.
    pub plain_http: Vec<String>,
    /// Servers to reach over HTTPS even though they are on loopback.
    pub https: Vec<String>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// The `User-Agent` to send; defaults to `hoist/<version>`.
    pub user_agent: Option<String>,
    /// Extra trusted CA certificates (PEM files, each may hold several).
    pub ca_certs: Vec<PathBuf>,
    /// Docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt` are CAs and
    /// `*.cert` + `*.key` a client certificate. `None`: [`DEFAULT_CERTS_DIR`].
    pub certs_dir: Option<PathBuf>,
    /// When and how often failed requests are tried again.
    pub retry: RetryPolicy,
    /// Told about every retry before its delay (the library never prints).
    pub on_retry: Option<RetryObserver>,
    /// The longest a request may go without progress (no byte of its body
    /// taken, no answer) and the longest between chunks of an answer; also
    /// the limit for making a connection.
    pub timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            https: Vec::new(),
            insecure: false,
            user_agent: None,
            ca_certs: Vec::new(),
            certs_dir: None,
            retry: RetryPolicy::default(),
            on_retry: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl TransportOptions {
    /// Options for talking to `servers` (`host[:port]`) as `connection`
    /// says: its `plain_http` and `https` apply to each of them.
    pub fn for_servers(connection: &Connection, servers: impl IntoIterator<Item = String>) -> Self {
        let servers: Vec<String> = servers.into_iter().collect();
        let pick = |on: bool| if on { servers.clone() } else { Vec::new() };
        Self {
            plain_http: pick(connection.plain_http),
            https: pick(connection.https),
            insecure: connection.insecure,
            ca_certs: connection.ca_certs.clone(),
            certs_dir: connection.certs_dir.clone(),
            retry: RetryPolicy { max_elapsed: connection.timeout * 4, ..RetryPolicy::default() },
            timeout: connection.timeout,
            ..Self::default()
        }
    }
}

/// Connection pools (one per server with its own `certs.d` TLS material, one
/// for the rest), built once from [`TransportOptions`], and the choice of
/// plain HTTP or HTTPS per server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    shared: reqwest::Client,
    /// `host[:port]` → a client with that server's `certs.d` material.
    per_host: Arc<HashMap<String, reqwest::Client>>,
    /// The system had no CA certificates: HTTPS trusts the bundled public roots.
    bundled_roots: bool,
    options: Arc<TransportOptions>,
}

impl Transport {
    pub fn new(options: TransportOptions) -> Result<Self, HttpError> {
        // reqwest is built without a default crypto provider (ring builds in
        // half the time of aws-lc); install ours once. A second install fails
        // harmlessly, so this is safe to call for every client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (mut extra_cas, bundled_roots) = trusted_roots();
        for path in &options.ca_certs {
            extra_cas.extend(read_cas(path)?);
        }
        let shared = build(&options, extra_cas.clone(), None)?;
        let certs_dir = options.certs_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIR));
        let mut per_host = HashMap::new();
        for (host, material) in scan_certs_dir(&certs_dir)? {
            let mut cas = extra_cas.clone();
            cas.extend(material.cas);
            tracing::debug!(%host, dir = %certs_dir.display(), client_cert = material.identity.is_some(), "TLS settings from certs.d");
            per_host.insert(host, build(&options, cas, material.identity)?);
        }
        Ok(Self { shared, per_host: Arc::new(per_host), bundled_roots, options: Arc::new(options) })
    }

    pub fn options(&self) -> &TransportOptions {
        &self.options
    }

    /// True when the system has no CA certificates (a bare container, a
    /// minimal host) and HTTPS trusts the public roots built into hoist
    /// (Mozilla's, from `webpki-root-certs`) instead.
    pub fn uses_bundled_roots(&self) -> bool {
        self.bundled_roots
    }

    /// The pool for servers without `certs.d` material of their own.
    pub fn shared_pool(&self) -> reqwest::Client {
        self.shared.clone()
    }

    /// The connection pool for `url`'s host: its own if `certs.d` has
    /// material for it, the shared one otherwise.
    pub fn pool_for(&self, url: &Url) -> reqwest::Client {
        let host = url.host_str().unwrap_or_default();
        let key = url.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
        self.per_host.get(&key).or_else(|| self.per_host.get(host)).unwrap_or(&self.shared).clone()
    }

    /// Whether `server` (`host[:port]` as the user wrote it) is spoken to
    /// over plain HTTP: when asked, or on loopback (as docker does) unless
    /// HTTPS was asked for it or `certs.d` has TLS material for it.
    pub fn uses_plain_http(&self, server: &str) -> bool {
        if self.options.plain_http.iter().any(|host| host == server) {
            return true;
        }
        // TLS material for a loopback server means the user wants TLS there.
        hoist_oci::is_loopback_host(server)
            && !self.options.https.iter().any(|host| host == server)
            && !self.per_host.contains_key(server)
    }
}

/// The roots every connection trusts, and whether they are the bundled ones.
///
/// reqwest's `rustls-no-provider` verifies through rustls-platform-verifier,
/// which on Linux loads the system store with rustls-native-certs and fails
/// the whole client with "No CA certificates were loaded from the system"
/// when it finds none, even for plain-HTTP pushes. So hoist loads the store
/// itself, once, with the same loader (`SSL_CERT_FILE`/`SSL_CERT_DIR`, then
/// the distribution's bundle), and hands reqwest exactly these roots
/// (`tls_certs_only`); an empty store falls back to Mozilla's public roots.
fn trusted_roots() -> (Vec<reqwest::Certificate>, bool) {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "reading the system's CA certificates");
    }
    // Keep what rustls accepts as a trust anchor, as the platform verifier
    // does: one malformed system certificate must not break every push.
    let mut parsed = rustls::RootCertStore::empty();
    let system: Vec<reqwest::Certificate> = found
        .certs
        .into_iter()
        .filter(|der| parsed.add(der.clone()).is_ok())
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
        .collect();
    if !system.is_empty() {
        tracing::debug!(roots = system.len(), "trusting the system's CA certificates");
        return (system, false);
    }
    let bundled =
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok());
    (bundled.collect(), true)
}

fn build(
    options: &TransportOptions,
    cas: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, HttpError> {
    let user_agent = options.user_agent.clone().unwrap_or_else(|| format!("hoist/{}", env!("CARGO_PKG_VERSION")));
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        // One TCP connection per concurrent upload: with HTTP/2 every
        // layer would share one connection and the server's window.
        .http1_only()
        // No `read_timeout`: reqwest runs it from the request's start to the
        // answer, which would cut off large uploads. Requests and answers
        // are watched for progress instead (`wire.rs`).
        .connect_timeout(options.timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Redirects are followed; reqwest drops `Authorization` when one
        // leads to another host, so credentials stay with the registry.
        .tls_danger_accept_invalid_certs(options.insecure)
        .tls_certs_only(cas);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    with_proxies(builder)?.build().map_err(|e| {
        HttpError::new(HttpErrorKind::Local, "set up the HTTP client").with_detail(error_chain(&e)).with_hint(
            "a TLS setting on this machine is unusable: check the files given with --ca-cert and those in the certs.d \
             directory (--certs-dir)",
        )
    })
}

/// Proxies from `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`
/// (or their lower-case forms), as docker reads them, including its (Go's)
/// rule that loopback is never proxied: a local test registry keeps working
/// on a machine whose proxy is set for the outside world.
fn with_proxies(builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, HttpError> {
    let var = |names: [&str; 2]| names.into_iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()));
    let exceptions = var(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    let no_proxy = reqwest::NoProxy::from_string(&format!("localhost,127.0.0.0/8,::1,{exceptions}"));
    let proxy_error = |name: &str, e: &reqwest::Error| {
        HttpError::new(HttpErrorKind::Local, format!("use the proxy in {name}"))
            .with_detail(error_chain(e))
            .with_hint(format!("set {name} to a URL such as http://proxy.example:3128, or unset it"))
    };
    // Replaces reqwest's own reading of the environment, which proxies loopback too.
    let mut builder = builder.no_proxy();
    if let Some(url) = var(["HTTP_PROXY", "http_proxy"]) {
        let proxy = reqwest::Proxy::http(&url).map_err(|e| proxy_error("HTTP_PROXY", &e))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = var(["HTTPS_PROXY", "https_proxy"]) {
        let proxy = reqwest::Proxy::https(&url).map_err(|e| proxy_error("HTTPS_PROXY", &e))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = var(["ALL_PROXY", "all_proxy"]) {
        let proxy = reqwest::Proxy::all(&url).map_err(|e| proxy_error("ALL_PROXY", &e))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy));
    }
    Ok(builder)
}

fn read_cas(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpError> {
    let tls_error = |detail: String| {
        HttpError::new(HttpErrorKind::Local, format!("read CA certificates from {}", path.display()))
            .with_detail(detail)
            .with_hint("give a PEM file holding one or more `-----BEGIN CERTIFICATE-----` blocks")
    };
    let pem = std::fs::read(path).map_err(|e| tls_error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls_error(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(tls_error("it holds no certificate".into()));
    }
    Ok(certs)
}

#[derive(Default)]
struct HostMaterial {
    cas: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

/// Reads docker's `certs.d`: one directory per `host[:port]`, `*.crt` CAs,
/// and a client certificate `NAME.cert` with its key `NAME.key`.
fn scan_certs_dir(dir: &Path) -> Result<Vec<(String, HostMaterial)>, HttpError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut hosts = Vec::new();
    for entry in entries.flatten() {
        let host_dir = entry.path();
        if !host_dir.is_dir() {
            continue;
        }
        let host = entry.file_name().to_string_lossy().into_owned();
        let mut material = HostMaterial::default();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&host_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for file in &files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("crt") => material.cas.extend(read_cas(file)?),
                Some("cert") => {
                    let key = file.with_extension("key");
                    let unreadable = |what: &Path, e: String| {
                        HttpError::new(HttpErrorKind::Local, format!("read the client certificate for {host}"))
                            .with_detail(format!("{}: {e}", what.display()))
                            .with_hint(format!(
                                "docker's layout wants `NAME.cert` and `NAME.key` side by side in {}",
                                host_dir.display()
                            ))
                    };
                    let mut pem = std::fs::read(file).map_err(|e| unreadable(file, e.to_string()))?;
                    pem.push(b'\n');
                    pem.extend(std::fs::read(&key).map_err(|e| unreadable(&key, e.to_string()))?);
                    material.identity =
                        Some(reqwest::Identity::from_pem(&pem).map_err(|e| unreadable(file, error_chain(&e)))?);
                }
                _ => {}
            }
        }
        hosts.push((host, material));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("client.cert"), "not used").unwrap();
        let error = scan_certs_dir(dir.path()).err().expect("a client.cert without its key is an error");
        assert!(error.to_string().contains("client certificate for reg.example:5000"), "{error}");
        assert!(error.to_string().contains("client.key"), "{error}");

        std::fs::remove_file(host.join("client.cert")).unwrap();
        std::fs::write(host.join("ca.crt"), "not PEM").unwrap();
        let error = scan_certs_dir(dir.path()).err().expect("a .crt without a certificate is an error");
        assert!(error.to_string().contains("ca.crt"), "{error}");
    }

    #[test]
    fn a_missing_certs_dir_is_no_material() {
        assert!(scan_certs_dir(Path::new("/nonexistent/certs.d")).unwrap().is_empty());
    }
}
