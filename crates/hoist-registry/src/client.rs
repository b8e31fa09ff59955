use std::sync::Arc;
use std::time::Duration;

use hoist_oci::Reference;

use crate::{ErrorKind, RegistryError, Repository, RetryObserver, RetryPolicy};

/// Settings that apply to every registry a [`Client`] talks to.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) to reach over plain HTTP. Loopback
    /// registries always are, as with docker.
    pub plain_http: Vec<String>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// The `User-Agent` to send; defaults to `hoist/<version>`.
    pub user_agent: Option<String>,
    /// When and how often failed requests and uploads are tried again.
    pub retry: RetryPolicy,
    /// Told about every retry before its delay (the client never prints).
    pub on_retry: Option<RetryObserver>,
}

/// A registry client: one connection pool shared by every repository handle.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    options: Arc<ClientOptions>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        // reqwest is built without a default crypto provider (ring builds in
        // half the time of aws-lc); install ours once. A second install fails
        // harmlessly, so this is safe to call for every client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let user_agent = options.user_agent.clone().unwrap_or_else(|| format!("hoist/{}", env!("CARGO_PKG_VERSION")));
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            // One TCP connection per concurrent upload: with HTTP/2 every
            // layer would share one connection and the server's window.
            .http1_only()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(60))
            .tls_danger_accept_invalid_certs(options.insecure)
            .build()
            .map_err(|e| {
                RegistryError::new(ErrorKind::Protocol, "set up the HTTP client").with_detail(e.to_string())
            })?;
        Ok(Self { http, options: Arc::new(options) })
    }

    /// A handle for the repository named by `reference`.
    pub fn repository(&self, reference: &Reference) -> Repository {
        let scheme = if self.uses_plain_http(reference) { "http" } else { "https" };
        let base = url::Url::parse(&format!("{scheme}://{}/", reference.api_host()))
            .expect("a validated registry host always forms a URL");
        Repository::new(self.clone(), base, reference.repository().to_owned())
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    fn uses_plain_http(&self, reference: &Reference) -> bool {
        reference.is_loopback() || self.options.plain_http.iter().any(|host| host == reference.registry())
    }
}
