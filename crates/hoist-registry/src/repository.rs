use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use hoist_oci::Digest;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};
use url::Url;

use crate::auth::{HostAuth, Scope, merge_scopes};
use crate::retry::{RetryContext, RetryPolicy};
use crate::wire::{self, Activity};
use crate::{Client, ErrorKind, RegistryError};

/// Optional lookups (the destination's manifest, a cache hint) get one
/// attempt within this long, so they can never stall or fail a push.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// One repository on one registry.
#[derive(Clone, Debug)]
pub struct Repository {
    /// Its `http` is this registry's pool (its own when `certs.d` has TLS material for it).
    client: Client,
    base: Url,
    name: String,
    auth: Arc<HostAuth>,
    /// What every request asks a token for: push and pull here first,
    /// then any extra (e.g. pull on a mount source).
    scopes: Vec<Scope>,
    /// An optional lookup: one attempt, within [`LOOKUP_LIMIT`].
    lookup: bool,
}

impl Repository {
    pub(crate) fn new(client: Client, base: Url, name: String, auth: Arc<HostAuth>) -> Self {
        let scopes = vec![Scope::repository(&name, &["pull", "push"])];
        Self { client, base, name, auth, scopes, lookup: false }
    }

    /// The same repository, whose tokens also grant pull on `source`: what a
    /// cross-repository mount from `source` needs, since registries that
    /// check per-repository scopes otherwise turn the mount into an upload.
    /// [`Repository::upload_blob`] asks for it itself when it mounts.
    #[must_use]
    pub fn with_pull_scope(&self, source: &str) -> Self {
        let mut scopes = self.scopes.clone();
        scopes.push(Scope::repository(source, &["pull"]));
        Self { scopes: merge_scopes(scopes), ..self.clone() }
    }

    /// The same repository for lookups that only save work: each request is
    /// tried once and given at most 10 s (less if the client's timeout is
    /// shorter), so a slow or broken registry costs little before the real
    /// work reports it properly.
    #[must_use]
    pub fn for_lookup(&self) -> Self {
        Self { lookup: true, ..self.clone() }
    }

    /// The same repository, whose tokens ask for `pull` only.
    pub(crate) fn pull_only(mut self) -> Self {
        self.scopes = vec![Scope::repository(&self.name, &["pull"])];
        self
    }

    /// The same registry, for requests outside any repository: tokens for
    /// no scope at all.
    pub(crate) fn without_scopes(mut self) -> Self {
        self.scopes = Vec::new();
        self
    }

    /// Whether credentials are held for this registry (found once, then kept
    /// with its auth session, as every request uses them).
    pub(crate) async fn holds_credentials(&self) -> Result<bool, RegistryError> {
        Ok(self.auth.credential(&self.client).await?.is_some())
    }

    /// `/v2/` on this registry.
    pub(crate) fn api_root(&self) -> Url {
        self.base.join("v2/").expect("a registry base URL takes a path")
    }

    /// The repository path, e.g. `team/app`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host[:port]` as the registry is addressed.
    pub(crate) fn registry(&self) -> String {
        match self.base.port() {
            Some(port) => format!("{}:{port}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_owned(),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.client.http
    }

    pub(crate) fn endpoint(&self, path: &str) -> Url {
        self.base.join(&format!("v2/{}/{path}", self.name)).expect("repository names and digests are URL-safe")
    }

    /// How long a request or an answer may go without progress.
    pub(crate) fn stall_limit(&self) -> Duration {
        let timeout = self.client.options().timeout;
        if self.lookup { timeout.min(LOOKUP_LIMIT) } else { timeout }
    }

    /// HEAD the blob: `Some(size)` if the registry has it in this repository.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        self.head_blob(digest, None).await
    }

    /// [`Self::blob_exists`], counting retries in `retries`.
    pub(crate) async fn head_blob(
        &self,
        digest: &Digest,
        retries: Option<&AtomicU32>,
    ) -> Result<Option<u64>, RegistryError> {
        let action = format!("check for blob {digest} in {}", self.name);
        let url = self.endpoint(&format!("blobs/{digest}"));
        let response = self.send_counted(&action, &url, self.http().head(url.clone()), retries).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(header_length(&response))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    /// Every request goes through here.
    pub(crate) async fn send(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_counted(action, url, request, None).await
    }

    /// [`Self::send`], adding each retry to `retries`. Retries (see
    /// `retry.rs`) run one [`Self::send_once`] per attempt.
    pub(crate) async fn send_counted(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
        retries: Option<&AtomicU32>,
    ) -> Result<reqwest::Response, RegistryError> {
        let context = self.retry_context(retries);
        crate::retry::with_retries(context, action, url, request, |request| async move {
            self.send_once(action, url, request, &Activity::new()).await
        })
        .await
    }

    pub(crate) fn retry_context<'a>(&'a self, counter: Option<&'a AtomicU32>) -> RetryContext<'a> {
        let options = self.client.options();
        let policy = if self.lookup { RetryPolicy::none() } else { options.retry.clone() };
        RetryContext { policy, observer: options.on_retry.as_ref(), counter }
    }

    /// One attempt at a request, failing once `activity` shows no progress
    /// for the stall limit.
    pub(crate) async fn send_once(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
        activity: &Activity,
    ) -> Result<reqwest::Response, RegistryError> {
        tracing::debug!(url = %crate::RedactedUrl::new(url.clone()), "{action}");
        let response = self.authorized(action, url, request, activity).await?;
        // Every answer, whatever its status, may carry a Warning for the user.
        self.client.warnings.observe(&self.registry(), response.headers());
        Ok(response)
    }

    /// Sends under the stall watchdog.
    async fn deliver(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
        activity: &Activity,
    ) -> Result<reqwest::Response, RegistryError> {
        wire::send(request, activity, self.stall_limit(), action, url).await
    }

    /// One attempt, authorized as earlier challenges taught. On a 401 the
    /// challenge is answered (a token fetched, or Basic credentials found)
    /// and the request is sent once more, from a copy taken beforehand
    /// (`try_clone`: bytes bodies copy, streamed bodies do not).
    async fn authorized(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
        activity: &Activity,
    ) -> Result<reqwest::Response, RegistryError> {
        // Credentials go only to the registry's own host: a Location may point elsewhere (storage).
        if !same_origin(url, &self.base) {
            return self.deliver(action, url, request, activity).await;
        }
        let header = self.auth.authorization(&self.client, url, &self.scopes, self.stall_limit()).await?;
        // The copy is taken before `Authorization` is set: `header` appends.
        let spare = request.try_clone();
        let request = match &header {
            Some(header) => request.header(AUTHORIZATION, header.clone()),
            None => request,
        };
        let response = self.deliver(action, url, request, activity).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(header) = self
            .auth
            .answer(&self.client, url, response.headers(), &self.scopes, header.as_ref(), self.stall_limit())
            .await?
        else {
            return Err(self.refused(action, url, response).await);
        };
        let Some(request) = spare else {
            // The token died between its renewal check and this request. A
            // new one is cached now; the upload recovers by sending again.
            return Err(RegistryError::new(ErrorKind::Unavailable, action)
                .with_url(url)
                .with_detail("the registry refused the token for a streamed body that cannot be sent twice")
                .with_hint("the registry's tokens expire sooner than it says; push again"));
        };
        let response = self.deliver(action, url, request.header(AUTHORIZATION, header), activity).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.refused(action, url, response).await);
        }
        Ok(response)
    }

    /// The error for a 401 that answering the challenge did not cure. One
    /// that is Harbor saying the project does not exist is that, never a
    /// matter of credentials.
    async fn refused(&self, action: &str, url: &Url, response: reqwest::Response) -> RegistryError {
        let error = error_from(action, url, response).await;
        if error.kind() == ErrorKind::NotFound {
            return error;
        }
        let hint = self.auth.refusal_hint(&self.client).await;
        error.with_hint(hint)
    }
}

/// Same scheme, host and port: the registry itself, not a storage redirect.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

/// A POST that opens an upload session (and a mount is one): no body.
pub(crate) fn empty_post(repo: &Repository, url: &Url) -> reqwest::RequestBuilder {
    repo.http().post(url.clone()).header(CONTENT_LENGTH, 0)
}

/// The `Content-Length` header itself: on a HEAD, reqwest's
/// `content_length()` is the empty body's length.
pub(crate) fn header_length(response: &reqwest::Response) -> u64 {
    header_str(response, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()).unwrap_or_default()
}

pub(crate) fn header_str(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The error for an unexpected answer, from its status and the start of its body.
pub(crate) async fn error_from(action: &str, url: &Url, response: reqwest::Response) -> RegistryError {
    let status = response.status().as_u16();
    let body = wire::error_body(response).await;
    RegistryError::from_response(action, url, status, &body)
}
