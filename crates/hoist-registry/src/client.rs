use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_http::{Transport, TransportOptions};
use hoist_oci::Reference;
use url::Url;

use crate::auth::HostAuth;
use crate::{CredentialStore, RegistryError, Repository, RetryObserver, RetryPolicy};

pub use hoist_http::{Connection, DEFAULT_CERTS_DIR, DEFAULT_TIMEOUT};

/// Settings that apply to every registry a [`Client`] talks to.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) to reach over plain HTTP. Loopback
    /// registries are too, as with docker, unless listed in `https`.
    pub plain_http: Vec<String>,
    /// Registries to reach over HTTPS even though they are on loopback.
    pub https: Vec<String>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// The `User-Agent` to send; defaults to `hoist/<version>`.
    pub user_agent: Option<String>,
    /// Where credentials come from; `Default` is anonymous.
    pub credentials: CredentialStore,
    /// Extra trusted CA certificates (PEM files, each may hold several).
    pub ca_certs: Vec<std::path::PathBuf>,
    /// Docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt` are CAs and
    /// `*.cert` + `*.key` a client certificate. `None`: [`DEFAULT_CERTS_DIR`].
    pub certs_dir: Option<std::path::PathBuf>,
    /// When and how often failed requests and uploads are tried again.
    pub retry: RetryPolicy,
    /// Told about every retry before its delay (the client never prints).
    pub on_retry: Option<RetryObserver>,
    /// The longest a request may go without progress (no byte of its body
    /// taken, no answer) and the longest between chunks of an answer; also
    /// the limit for making a connection.
    pub timeout: Duration,
}

impl ClientOptions {
    /// Options for talking to `registries` (`host[:port]`) as `connection`
    /// says: its `plain_http` and `https` apply to each of them.
    pub fn for_registries(
        connection: &Connection,
        registries: impl IntoIterator<Item = String>,
        credentials: CredentialStore,
    ) -> Self {
        Self::from_transport(TransportOptions::for_servers(connection, registries), credentials)
    }

    /// These options with `credentials`.
    pub fn from_transport(transport: TransportOptions, credentials: CredentialStore) -> Self {
        let TransportOptions { plain_http, https, insecure, user_agent, ca_certs, certs_dir, retry, on_retry, timeout } =
            transport;
        Self { plain_http, https, insecure, user_agent, credentials, ca_certs, certs_dir, retry, on_retry, timeout }
    }

    /// Everything but the credentials: what the HTTP transport is built from.
    pub fn transport(&self) -> TransportOptions {
        TransportOptions {
            plain_http: self.plain_http.clone(),
            https: self.https.clone(),
            insecure: self.insecure,
            user_agent: self.user_agent.clone(),
            ca_certs: self.ca_certs.clone(),
            certs_dir: self.certs_dir.clone(),
            retry: self.retry.clone(),
            on_retry: self.on_retry.clone(),
            timeout: self.timeout,
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::from_transport(TransportOptions::default(), CredentialStore::default())
    }
}

/// A registry client: connection pools (one per registry with its own TLS
/// material, one for the rest; see [`Transport`]) and the authentication
/// sessions, shared by every repository handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    /// The pool requests go through: a repository handle's is its registry's.
    pub(crate) http: reqwest::Client,
    transport: Transport,
    /// Whether the bundled roots were announced yet (once per client).
    pub(crate) roots_announced: Arc<std::sync::atomic::AtomicBool>,
    auth: Arc<Mutex<HashMap<String, Arc<HostAuth>>>>,
    options: Arc<ClientOptions>,
    /// `Warning` texts already shown: each is shown once per client.
    pub(crate) warnings: Arc<hoist_http::Warnings>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        let transport = Transport::new(options.transport())?;
        Ok(Self {
            http: transport.shared_pool(),
            transport,
            roots_announced: Arc::default(),
            auth: Arc::new(Mutex::new(HashMap::new())),
            options: Arc::new(options),
            warnings: Arc::default(),
        })
    }

    /// A handle for the repository named by `reference`.
    pub fn repository(&self, reference: &Reference) -> Repository {
        let scheme = if self.uses_plain_http(reference) { "http" } else { "https" };
        let base = url::Url::parse(&format!("{scheme}://{}/", reference.api_host()))
            .expect("a validated registry host always forms a URL");
        let auth = {
            let mut sessions = self.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let allowed = self.options.plain_http.iter().any(|h| h == reference.registry());
            Arc::clone(
                sessions
                    .entry(reference.registry().to_owned())
                    .or_insert_with(|| Arc::new(HostAuth::new(reference.registry().to_owned(), allowed))),
            )
        };
        // The handle's client talks through this registry's own pool.
        let mut client = self.clone();
        client.http = self.http_for(&base);
        Repository::new(client, base, reference.repository().to_owned(), auth)
    }

    /// A handle for reading the repository named by `reference`: its tokens
    /// ask for `pull` only, which a read-only account is granted (asking for
    /// `pull,push` too gets such an account refused by token registries).
    pub fn repository_for_pull(&self, reference: &Reference) -> Repository {
        self.repository(reference).pull_only()
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// True when the system has no CA certificates (a bare container, a
    /// minimal host) and HTTPS trusts the public roots built into hoist
    /// (Mozilla's, from `webpki-root-certs`) instead.
    pub fn uses_bundled_roots(&self) -> bool {
        self.transport.uses_bundled_roots()
    }

    /// The connection pool for `url`'s host: its own if `certs.d` has
    /// material for it, the shared one otherwise.
    pub(crate) fn http_for(&self, url: &Url) -> reqwest::Client {
        self.transport.pool_for(url)
    }

    pub(crate) fn uses_plain_http(&self, reference: &Reference) -> bool {
        self.transport.uses_plain_http(reference.registry())
    }
}
