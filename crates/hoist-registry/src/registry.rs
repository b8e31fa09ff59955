//! Is a registry there? One `GET /v2/` before a push, so that a mistyped or
//! unreachable address is the first thing a user reads, not the end of a
//! plan and a screen of per-layer lines.

use std::sync::atomic::Ordering;

use hoist_oci::{Reference, host_without_port};
use reqwest::StatusCode;
use url::Url;

use crate::retry::RetryContext;
use crate::{Client, ErrorKind, RegistryError};

/// Every distribution registry names its API version in this header, on
/// every answer, whatever the status.
const API_VERSION: &str = "Docker-Distribution-API-Version";

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
    pub async fn check_registry(&self, reference: &Reference) -> Result<(), RegistryError> {
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
            return Ok(());
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
