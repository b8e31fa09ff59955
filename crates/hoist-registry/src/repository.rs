use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use hoist_oci::Digest;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::BlobSource as _;
use crate::auth::{HostAuth, Scope, merge_scopes};
use crate::retry::RetryContext;
use crate::upload::{next_location, parse_range_end, with_digest};
use crate::{Client, DOCKER_CONTENT_DIGEST, ErrorKind, OCTET_STREAM, RegistryError};

/// What [`Repository::push_blob`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had the blob.
    Existed,
    /// The blob was uploaded.
    Uploaded,
}

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
}

impl Repository {
    pub(crate) fn new(client: Client, base: Url, name: String, auth: Arc<HostAuth>) -> Self {
        let scopes = vec![Scope::repository(&name, &["pull", "push"])];
        Self { client, base, name, auth, scopes }
    }

    /// The same repository, whose tokens also grant pull on `source`: what a
    /// cross-repository mount from `source` needs, since registries that
    /// check per-repository scopes otherwise turn the mount into an upload.
    #[must_use]
    pub fn with_pull_scope(&self, source: &str) -> Self {
        let mut scopes = self.scopes.clone();
        scopes.push(Scope::repository(source, &["pull"]));
        Self { scopes: merge_scopes(scopes), ..self.clone() }
    }

    /// The same repository, whose tokens ask for `pull` only.
    pub(crate) fn pull_only(mut self) -> Self {
        self.scopes = vec![Scope::repository(&self.name, &["pull"])];
        self
    }

    /// The repository path, e.g. `team/app`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.client.http
    }

    pub(crate) fn endpoint(&self, path: &str) -> Url {
        self.base.join(&format!("v2/{}/{path}", self.name)).expect("repository names and digests are URL-safe")
    }

    /// HEAD the blob: `Some(size)` if the registry has it in this repository.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let action = format!("check for blob {digest} in {}", self.name);
        let url = self.endpoint(&format!("blobs/{digest}"));
        let response = self.send(&action, &url, self.client.http.head(url.clone())).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(header_length(&response))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    /// Uploads a blob whose bytes and digest are known, unless the registry
    /// already has it: HEAD, then POST and a monolithic PUT.
    pub async fn push_blob(&self, digest: &Digest, bytes: Bytes) -> Result<BlobPush, RegistryError> {
        let source = crate::BytesSource::new(bytes);
        if source.digest().as_ref() != Some(digest) {
            return Err(RegistryError::new(ErrorKind::Protocol, format!("upload blob {digest} to {}", self.name))
                .with_detail("the bytes given do not hash to that digest"));
        }
        match self.upload_blob(&source, &crate::UploadOptions::default()).await {
            Ok(outcome) if outcome.action == crate::UploadAction::Existed => Ok(BlobPush::Existed),
            Ok(_) => Ok(BlobPush::Uploaded),
            Err(crate::UploadError::Registry(error)) => Err(error),
            Err(crate::UploadError::Source(error)) => {
                Err(RegistryError::new(ErrorKind::Protocol, format!("upload blob {digest} to {}", self.name))
                    .with_detail(error.to_string()))
            }
        }
    }

    /// Opens an upload session (POST). A 202 is only a session: nothing is
    /// stored until [`Upload::commit`] answers 201.
    pub async fn start_upload(&self) -> Result<Upload, RegistryError> {
        let action = format!("start a blob upload to {}", self.name);
        let url = self.endpoint("blobs/uploads/");
        let request = self.client.http.post(url.clone()).header(CONTENT_LENGTH, 0);
        let response = self.send(&action, &url, request).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(error_from(&action, &url, response).await);
        }
        let location = next_location(&action, &url, &response)?;
        Ok(Upload { repository: self.clone(), location })
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

    // ---- retries (see retry.rs): one `send_once` per attempt ----
    /// [`Self::send`], adding each retry to `retries`.
    pub(crate) async fn send_counted(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
        retries: Option<&AtomicU32>,
    ) -> Result<reqwest::Response, RegistryError> {
        let context = self.retry_context(retries);
        crate::retry::with_retries(context, action, request, |request| self.send_once(action, url, request)).await
    }

    pub(crate) fn retry_context<'a>(&'a self, counter: Option<&'a AtomicU32>) -> RetryContext<'a> {
        let options = self.client.options();
        RetryContext { policy: &options.retry, observer: options.on_retry.as_ref(), counter }
    }
    // ---- end retries ----

    /// One attempt at a request.
    pub(crate) async fn send_once(
        &self,
        action: &str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        tracing::debug!(url = %crate::RedactedUrl::new(url.clone()), "{action}");
        let response = self.authorized(action, url, request).await?;
        // Every answer, whatever its status, may carry a Warning for the user.
        let registry = match self.base.port() {
            Some(port) => format!("{}:{port}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_owned(),
        };
        self.client.warnings.observe(&registry, response.headers());
        Ok(response)
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
    ) -> Result<reqwest::Response, RegistryError> {
        // ---- auth: begin ----
        // Credentials go only to the registry's own host: a Location may point elsewhere (storage).
        if !same_origin(url, &self.base) {
            return request.send().await.map_err(|e| RegistryError::from_transport(action, url, &e));
        }
        let header = self.auth.authorization(&self.client, url, &self.scopes).await?;
        // The copy is taken before `Authorization` is set: `header` appends.
        let spare = request.try_clone();
        let request = match &header {
            Some(header) => request.header(AUTHORIZATION, header.clone()),
            None => request,
        };
        let response = request.send().await.map_err(|e| RegistryError::from_transport(action, url, &e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(header) =
            self.auth.answer(&self.client, url, response.headers(), &self.scopes, header.as_ref()).await?
        else {
            return Err(self.refused(action, url, response).await);
        };
        let Some(request) = spare else {
            // The token died between its renewal check and this request. A
            // new one is cached now, so doing the whole upload again works.
            return Err(RegistryError::new(ErrorKind::Unavailable, action)
                .with_url(url)
                .with_detail("the registry refused the token for a streamed body that cannot be sent twice")
                .with_hint("the registry's tokens expire sooner than it says; push again"));
        };
        let response = request
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(|e| RegistryError::from_transport(action, url, &e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.refused(action, url, response).await);
        }
        Ok(response)
        // ---- auth: end ----
    }

    /// The error for a 401 that answering the challenge did not cure.
    async fn refused(&self, action: &str, url: &Url, response: reqwest::Response) -> RegistryError {
        let hint = self.auth.refusal_hint(&self.client).await;
        error_from(action, url, response).await.with_hint(hint)
    }
}

/// An open blob upload session. Always carries the newest `Location` the
/// registry gave: distribution signs the offset into it.
#[derive(Debug)]
pub struct Upload {
    repository: Repository,
    location: Url,
}

impl Upload {
    /// Sends `body` as one streamed PATCH (docker's way when the digest is
    /// known only at the end). Returns the bytes the registry says it holds.
    pub async fn send_stream(&mut self, body: reqwest::Body) -> Result<Option<u64>, RegistryError> {
        let action = format!("upload a blob to {}", self.repository.name);
        let url = self.location.clone();
        let request = self
            .repository
            .client
            .http
            .request(Method::PATCH, url.clone())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(body);
        let response = self.repository.send(&action, &url, request).await?;
        // ECR answers 201 where the spec says 202.
        if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT) {
            return Err(error_from(&action, &url, response).await);
        }
        let stored = header_str(&response, "Range").and_then(|r| parse_range_end(&r)).map(|end| end + 1);
        self.location = next_location(&action, &url, &response)?;
        Ok(stored)
    }

    /// Closes the session with the digest of everything sent (empty PUT).
    pub async fn commit(self, digest: &Digest) -> Result<(), RegistryError> {
        self.put(digest, Bytes::new()).await
    }

    async fn put(self, digest: &Digest, bytes: Bytes) -> Result<(), RegistryError> {
        let action = format!("commit blob {digest} to {}", self.repository.name);
        let url = with_digest(&self.location, digest);
        let request = self
            .repository
            .client
            .http
            .put(url.clone())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, bytes.len())
            .body(bytes);
        let response = self.repository.send(&action, &url, request).await?;
        if !matches!(response.status(), StatusCode::CREATED | StatusCode::NO_CONTENT) {
            return Err(error_from(&action, &url, response).await);
        }
        if let Some(reported) = header_str(&response, DOCKER_CONTENT_DIGEST)
            && reported != digest.to_string()
        {
            return Err(RegistryError::new(ErrorKind::Protocol, action)
                .with_url(&url)
                .with_detail(format!("the registry stored it as {reported}")));
        }
        Ok(())
    }

    /// Abandons the session (DELETE). Best effort: registries may refuse it
    /// for lack of a `delete` scope, and the session expires anyway.
    pub async fn cancel(self) {
        let url = self.location.clone();
        let action = format!("cancel an upload to {}", self.repository.name);
        let request = self.repository.client.http.delete(url.clone());
        match self.repository.send(&action, &url, request).await {
            Ok(response) => {
                tracing::debug!(status = %response.status(), url = %crate::RedactedUrl::new(url), "cancelled upload");
            }
            Err(error) => tracing::debug!(%error, "could not cancel upload"),
        }
    }
}

/// Same scheme, host and port: the registry itself, not a storage redirect.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

/// The `Content-Length` header itself: on a HEAD, reqwest's
/// `content_length()` is the empty body's length.
pub(crate) fn header_length(response: &reqwest::Response) -> u64 {
    header_str(response, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()).unwrap_or_default()
}

pub(crate) fn header_str(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub(crate) async fn error_from(action: &str, url: &Url, response: reqwest::Response) -> RegistryError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    RegistryError::from_response(action, url, status, &body)
}
