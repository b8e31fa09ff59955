//! The protocol steps of a blob upload, one function each: open a session
//! (or mount into one), send bytes, ask where it stands, commit, cancel.
//! The engine in `upload.rs` composes them and owns every decision about
//! retrying and recovering; none of these re-sends a PATCH or PUT itself.

use std::sync::atomic::AtomicU32;

use hoist_oci::Digest;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use url::Url;

use crate::repository::{empty_post, error_from, header_str};
use crate::upload::OpenUploads;
use crate::wire::Activity;
use crate::{DOCKER_CONTENT_DIGEST, ErrorKind, OCTET_STREAM, RegistryError, Repository};

/// What a mount request achieved.
pub(crate) enum MountAnswer {
    Mounted,
    /// The registry opened an upload session instead.
    Session(Box<Session>),
    /// The registry refused the mount; an ordinary upload still works.
    Refused,
}

/// An open upload session: always the newest `Location` the registry gave
/// (distribution signs the offset into it).
#[derive(Debug)]
pub(crate) struct Session {
    repo: Repository,
    location: Url,
    /// `OCI-Chunk-Min-Length` from the POST, if any.
    min_chunk: Option<u64>,
    /// Where the session is recorded while open, and its id there.
    track: Option<(OpenUploads, u64)>,
}

impl Session {
    fn new(repo: &Repository, location: Url, min_chunk: Option<u64>, track: Option<&OpenUploads>) -> Self {
        let track = track.map(|open| (open.clone(), open.record(repo, &location)));
        Self { repo: repo.clone(), location, min_chunk, track }
    }

    /// POST: a new session.
    pub(crate) async fn open(
        repo: &Repository,
        retries: &AtomicU32,
        track: Option<&OpenUploads>,
    ) -> Result<Self, RegistryError> {
        let url = repo.endpoint("blobs/uploads/");
        let action = format!("start a blob upload to {}", repo.name());
        let response = repo.send_counted(&action, &url, empty_post(repo, &url), Some(retries)).await?;
        // 202 is a session, never a stored blob, even if a registry said 201.
        if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED) {
            return Err(error_from(&action, &url, response).await);
        }
        Ok(Self::new(repo, next_location(&action, &url, &response)?, min_chunk(&response), track))
    }

    /// POST with `mount` and `from`, asking for a token that also grants
    /// pull on `from` (without it, registries that check per-repository
    /// scopes answer with a challenge first, or turn the mount into an upload).
    pub(crate) async fn mount(
        repo: &Repository,
        digest: &Digest,
        from: &str,
        retries: &AtomicU32,
        track: Option<&OpenUploads>,
    ) -> Result<MountAnswer, RegistryError> {
        let mounting = repo.with_pull_scope(from);
        let mut url = repo.endpoint("blobs/uploads/");
        url.query_pairs_mut().append_pair("mount", &digest.to_string()).append_pair("from", from);
        let action = format!("mount blob {digest} from {from} into {}", repo.name());
        let response = match mounting.send_counted(&action, &url, empty_post(repo, &url), Some(retries)).await {
            Ok(response) => response,
            // A 401 that a fresh token did not cure comes back as an error:
            // the account may push here but not read `from` (Harbor says 401
            // for a project it cannot read, and 401 "project … not found",
            // a not-found error, for one that is gone). A refused mount, not
            // a refused upload; wrong credentials or a missing destination
            // fail the upload's own POST next.
            Err(error) if matches!(error.kind(), ErrorKind::Unauthorized | ErrorKind::Denied | ErrorKind::NotFound) => {
                tracing::debug!(%error, "mount refused; uploading instead");
                return Ok(MountAnswer::Refused);
            }
            Err(error) => return Err(error),
        };
        match response.status() {
            StatusCode::CREATED => Ok(MountAnswer::Mounted),
            StatusCode::ACCEPTED => {
                let location = next_location(&action, &url, &response)?;
                Ok(MountAnswer::Session(Box::new(Self::new(repo, location, min_chunk(&response), track))))
            }
            // Harbor refuses a mount from a project the account cannot read
            // with 401; others say 403 or 404.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                tracing::debug!(status = %response.status(), "mount refused; uploading instead");
                Ok(MountAnswer::Refused)
            }
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    pub(crate) fn repo(&self) -> &Repository {
        &self.repo
    }

    pub(crate) fn min_chunk(&self) -> Option<u64> {
        self.min_chunk
    }

    fn moved_to(&mut self, location: Url) {
        if let Some((open, id)) = &self.track {
            open.moved(*id, &location);
        }
        self.location = location;
    }

    /// The session is committed or cancelled: no longer recorded as open.
    pub(crate) fn finished(&mut self) {
        if let Some((open, id)) = self.track.take() {
            open.closed(id);
        }
    }

    /// One PUT with the whole blob and its digest: sends and commits.
    pub(crate) async fn put_whole(
        &mut self,
        action: &str,
        digest: &Digest,
        len: u64,
        body: reqwest::Body,
        activity: &Activity,
    ) -> Result<(), RegistryError> {
        let url = with_digest(&self.location, digest);
        let request =
            self.repo.http().put(url.clone()).header(CONTENT_TYPE, OCTET_STREAM).header(CONTENT_LENGTH, len).body(body);
        let response = self.repo.send_once(action, &url, request, activity).await?;
        check_committed(action, &url, digest, response).await
    }

    /// One PATCH of `body` (`range`: its inclusive `Content-Range`, for a
    /// chunk). Returns where the registry says the upload now ends, if it says.
    pub(crate) async fn patch(
        &mut self,
        action: &str,
        body: reqwest::Body,
        range: Option<String>,
        length: Option<u64>,
        activity: &Activity,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.location.clone();
        let mut request =
            self.repo.http().request(reqwest::Method::PATCH, url.clone()).header(CONTENT_TYPE, OCTET_STREAM);
        if let Some(range) = range {
            request = request.header("Content-Range", range);
        }
        if let Some(length) = length {
            request = request.header(CONTENT_LENGTH, length);
        }
        let response = self.repo.send_once(action, &url, request.body(body), activity).await?;
        // ECR answers 201 where the spec says 202; some say 204.
        if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT) {
            return Err(error_from(action, &url, response).await);
        }
        let stored = header_str(&response, "Range").and_then(|r| parse_range_end(&r)).map(|end| end + 1);
        self.moved_to(next_location(action, &url, &response)?);
        Ok(stored)
    }

    /// The empty PUT with the whole blob's digest that closes the session.
    /// Sent once; the caller decides what a failure means.
    pub(crate) async fn commit(&mut self, digest: &Digest, activity: &Activity) -> Result<(), RegistryError> {
        let action = format!("commit blob {digest} to {}", self.repo.name());
        let url = with_digest(&self.location, digest);
        let request = self.repo.http().put(url.clone()).header(CONTENT_TYPE, OCTET_STREAM).header(CONTENT_LENGTH, 0);
        let response = self.repo.send_once(&action, &url, request, activity).await?;
        check_committed(&action, &url, digest, response).await?;
        self.finished();
        Ok(())
    }

    /// GET on the session: how many bytes the registry holds (`None` if the
    /// session is gone), and its newest `Location`.
    pub(crate) async fn status(&mut self, retries: &AtomicU32) -> Result<Option<u64>, RegistryError> {
        let url = self.location.clone();
        let action = format!("ask how far the upload to {} got", self.repo.name());
        let response = self.repo.send_counted(&action, &url, self.repo.http().get(url.clone()), Some(retries)).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {}
            // Unknown or invalidated sessions: distribution says 404, or 400
            // BLOB_UPLOAD_INVALID when a broken request left it inconsistent.
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Ok(None),
            _ => return Err(error_from(&action, &url, response).await),
        }
        let Some(range) = header_str(&response, "Range") else { return Ok(None) };
        if response.headers().contains_key(LOCATION) {
            self.moved_to(next_location(&action, &url, &response)?);
        }
        // `0-0` is both "nothing" and "one byte" in distribution; a one-byte
        // head start is not worth the ambiguity.
        Ok(Some(parse_range_end(&range).map_or(0, |end| if end == 0 { 0 } else { end + 1 })))
    }

    /// Abandons the session (DELETE, one attempt, best effort).
    pub(crate) async fn cancel(mut self) {
        delete(&self.repo, &self.location).await;
        self.finished();
    }
}

/// DELETE on an upload session, once, within the lookup limit: registries
/// may refuse it for lack of a `delete` scope, and sessions expire anyway.
pub(crate) async fn delete(repo: &Repository, location: &Url) {
    let repo = repo.for_lookup();
    let action = format!("cancel an upload to {}", repo.name());
    let request = repo.http().delete(location.clone());
    match repo.send_once(&action, location, request, &Activity::new()).await {
        Ok(response) => tracing::debug!(status = %response.status(), "cancelled an upload"),
        Err(error) => tracing::debug!(%error, "could not cancel an upload"),
    }
}

async fn check_committed(
    action: &str,
    url: &Url,
    digest: &Digest,
    response: reqwest::Response,
) -> Result<(), RegistryError> {
    if !matches!(response.status(), StatusCode::CREATED | StatusCode::NO_CONTENT) {
        return Err(error_from(action, url, response).await);
    }
    if let Some(reported) = header_str(&response, DOCKER_CONTENT_DIGEST)
        && reported.trim() != digest.to_string()
        && reported.trim().starts_with("sha256:")
    {
        return Err(RegistryError::new(ErrorKind::Mismatch, action)
            .with_url(url)
            .with_detail(format!("the registry stored it as {reported}")));
    }
    Ok(())
}

fn min_chunk(response: &reqwest::Response) -> Option<u64> {
    header_str(response, "OCI-Chunk-Min-Length").and_then(|v| v.trim().parse().ok())
}

/// The session's next URL, resolved against the request that returned it
/// (registries may answer with a relative or an absolute `Location`).
pub(crate) fn next_location(
    action: &str,
    request_url: &Url,
    response: &reqwest::Response,
) -> Result<Url, RegistryError> {
    let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        RegistryError::new(ErrorKind::Protocol, action)
            .with_url(request_url)
            .with_detail("the registry sent no Location header")
    })?;
    request_url.join(location).map_err(|e| {
        RegistryError::new(ErrorKind::Protocol, action)
            .with_url(request_url)
            .with_detail(format!("its Location header is not a URL: {e}"))
    })
}

/// The session URL with `digest=` added to whatever query it already has.
pub(crate) fn with_digest(location: &Url, digest: &Digest) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut().append_pair("digest", &digest.to_string());
    url
}

/// `0-1023` or `bytes=0-1023` → 1023.
pub(crate) fn parse_range_end(range: &str) -> Option<u64> {
    let range = range.trim().trim_start_matches("bytes=");
    range.split_once('-')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_joins_an_existing_query() {
        let digest = Digest::of(b"x");
        let bare = Url::parse("http://r/v2/a/blobs/uploads/1").unwrap();
        assert_eq!(with_digest(&bare, &digest).query(), Some(format!("digest=sha256%3A{}", digest.hex()).as_str()));
        let stateful = Url::parse("http://r/v2/a/blobs/uploads/1?_state=a%2Bb%3D&x=1").unwrap();
        assert_eq!(
            with_digest(&stateful, &digest).query(),
            Some(format!("_state=a%2Bb%3D&x=1&digest=sha256%3A{}", digest.hex()).as_str())
        );
    }

    #[test]
    fn range_headers_are_read_tolerantly() {
        assert_eq!(parse_range_end("0-1023"), Some(1023));
        assert_eq!(parse_range_end("bytes=0-1023"), Some(1023));
        assert_eq!(parse_range_end("garbage"), None);
    }
}
