//! Is a registry there? One `GET /v2/` before a push, so that a mistyped or
//! unreachable address is the first thing a user reads, not the end of a
//! plan and a screen of per-layer lines. What it answered (its challenge)
//! also tells what kind of registry it is, at no extra cost: Harbor names
//! its token service `harbor-registry`.
//!
//! And are these credentials good? `hoist login` asks before storing them.

use std::sync::atomic::Ordering;

use hoist_oci::{Reference, host_without_port};
use reqwest::StatusCode;
use url::Url;

use crate::auth::{Challenge, parse_challenges};
use crate::retry::RetryContext;
use crate::{Client, ErrorKind, RegistryError};

/// Every distribution registry names its API version in this header, on
/// every answer, whatever the status.
const API_VERSION: &str = "Docker-Distribution-API-Version";

/// What a registry's `GET /v2/`, without credentials, answered.
#[derive(Clone, Debug)]
pub struct RegistryCheck {
    url: Url,
    status: u16,
    challenges: Vec<Challenge>,
}

impl RegistryCheck {
    /// The `/v2/` URL asked: its scheme, host and port are what every
    /// request to this registry uses.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The answer's status: 200, or 401 with challenges, most often.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The challenges of its `WWW-Authenticate` headers.
    pub fn challenges(&self) -> &[Challenge] {
        &self.challenges
    }

    /// The `service` of its Bearer challenge: the token service's name for
    /// the registry (`harbor-registry` on every Harbor).
    pub fn bearer_service(&self) -> Option<&str> {
        self.challenges.iter().find(|c| c.scheme == "bearer").and_then(|c| c.param("service"))
    }
}

impl Client {
    /// Asks the registry `reference` names for `GET /v2/`, without
    /// credentials. A 200, a 401 challenge, or any other answer carrying
    /// `Docker-Distribution-API-Version` means a registry is there; whether
    /// the credentials are good is for the push to find out. Busy answers
    /// (429, 5xx) are retried as every request is, and are an error if they
    /// last. A refused connection, a
    /// name that does not resolve, a TLS failure, or an answer from
    /// something that is not a registry is an error whose hint names the
    /// address.
    ///
    /// When the machine has no CA store ([`Client::uses_bundled_roots`]),
    /// the first check of an HTTPS registry logs a one-line warning saying
    /// so (through `tracing`: the library never prints).
    ///
    /// Returns what the registry answered, for callers that tell kinds of
    /// registries apart by their challenge.
    pub async fn check_registry(&self, reference: &Reference) -> Result<RegistryCheck, RegistryError> {
        let scheme = if self.uses_plain_http(reference) { "http" } else { "https" };
        let url = Url::parse(&format!("{scheme}://{}/v2/", reference.api_host()))
            .expect("a validated registry host always forms a URL");
        if scheme == "https" {
            self.announce_bundled_roots();
        }
        let action = format!("reach the registry at {}", reference.registry());
        let options = self.options();
        let context =
            RetryContext { policy: options.retry.clone(), observer: options.on_retry.as_ref(), counter: None };
        let (action_ref, url_ref, limit) = (&action, &url, options.timeout);
        let request = self.http_for(&url).get(url.clone());
        let sent = crate::retry::with_retries(context, &action, &url, request, |request| async move {
            crate::wire::send(request, &crate::wire::Activity::new(), limit, action_ref, url_ref).await
        })
        .await;
        let response = sent.map_err(|error| self.explain(error, reference))?;
        let status = response.status();
        tracing::debug!(%status, url = %url, "registry check");
        // Still busy after the retries: say so now rather than mid-push.
        if crate::retry::is_retryable_status(status) {
            return Err(crate::repository::error_from(&action, &url, response).await);
        }
        if status == StatusCode::OK
            || status == StatusCode::UNAUTHORIZED
            || response.headers().contains_key(API_VERSION)
        {
            let challenges = response
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            return Ok(RegistryCheck { url, status: status.as_u16(), challenges });
        }
        Err(RegistryError::new(ErrorKind::Network, action)
            .with_url(&url)
            .with_detail(format!("HTTP {}, without a {API_VERSION} header: this is not a registry", status.as_u16()))
            .with_hint(format!(
                "something other than a registry answers at {scheme}://{}: check the host and port{}",
                reference.registry(),
                if scheme == "https" { " (and `--plain-http` if the registry speaks plain HTTP)" } else { "" }
            )))
    }

    /// Checks that the credentials this client holds for `reference`'s
    /// registry are good, as `docker login` does before storing them: `GET
    /// /v2/`, its challenge answered as any request's is (Basic credentials,
    /// or a token for no scope from the registry's token service). Asking
    /// for no scope matters: Harbor's token service gives refused
    /// credentials an anonymous token for any scope asked, and refuses them
    /// only when nothing is asked. A registry that lets anyone in (200
    /// without a challenge) cannot refuse credentials, and is accepted, as
    /// docker does.
    pub async fn check_credentials(&self, reference: &Reference) -> Result<(), RegistryError> {
        let repo = self.repository(reference).without_scopes();
        let url = repo.api_root();
        let action = format!("log in to {}", reference.registry());
        let response = repo.send(&action, &url, repo.http().get(url.clone())).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(crate::repository::error_from(&action, &url, response).await)
    }

    /// [`Client::check_credentials`] when this client holds credentials for
    /// `reference`'s registry; `false` (nothing asked) when it holds none.
    /// What a push does before reading its archive, so refused credentials
    /// are said before a byte is read, staged or sent.
    pub async fn check_held_credentials(&self, reference: &Reference) -> Result<bool, RegistryError> {
        if !self.repository(reference).holds_credentials().await? {
            return Ok(false);
        }
        self.check_credentials(reference).await?;
        Ok(true)
    }

    /// A sharper hint where the transport error says more than "no registry".
    fn explain(&self, error: RegistryError, reference: &Reference) -> RegistryError {
        let cause = error.details().detail.clone().unwrap_or_default().to_ascii_lowercase();
        if cause.contains("dns error") || cause.contains("lookup address") {
            let host = host_without_port(reference.registry());
            return error.with_hint(format!(
                "the name `{host}` does not resolve: check the registry's spelling (and this machine's DNS)"
            ));
        }
        if self.uses_bundled_roots() && cause.contains("certificate") {
            let hint = error.hint().unwrap_or_default();
            return error.with_hint(format!(
                "{hint}. This machine has no CA certificates of its own, so hoist trusts only the public roots \
                 built into it"
            ));
        }
        error
    }

    fn announce_bundled_roots(&self) {
        if self.uses_bundled_roots() && !self.options().insecure && !self.roots_announced.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "no CA certificates on this machine (none in /etc/ssl/certs, SSL_CERT_FILE or SSL_CERT_DIR): \
                 HTTPS trusts the public roots built into hoist"
            );
        }
    }
}
