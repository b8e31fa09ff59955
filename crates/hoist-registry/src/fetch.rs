//! Reading manifests and small blobs back from a repository.

use bytes::Bytes;
use hoist_oci::{Digest, RawBlob, media_type};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::repository::{error_from, header_str};
use crate::{ErrorKind, RegistryError, Repository};

/// Manifests above this are refused when reading, as distribution refuses them when writing.
const MAX_MANIFEST_READ: usize = 4 * 1024 * 1024;

impl Repository {
    /// GETs the manifest under `tag_or_digest`, or `None` if there is none.
    /// The body is kept as exact bytes; a digest reference is verified.
    pub async fn get_manifest(&self, tag_or_digest: &str) -> Result<Option<RawBlob>, RegistryError> {
        let action = format!("read manifest {}:{tag_or_digest}", self.name());
        let url = self.endpoint(&format!("manifests/{tag_or_digest}"));
        let request = self.http().get(url.clone()).header(ACCEPT, media_type::MANIFEST_ACCEPT);
        let response = self.send(&action, &url, request).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(error_from(&action, &url, response).await),
        }
        let content_type = header_str(&response, CONTENT_TYPE.as_str())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let reported = header_str(&response, "Docker-Content-Digest");
        let bytes = read_capped(&action, &url, response, MAX_MANIFEST_READ).await?;
        let manifest = RawBlob::new(content_type, bytes.to_vec());
        let expected = Digest::parse(tag_or_digest).ok().or_else(|| reported.and_then(|d| Digest::parse(&d).ok()));
        if let Some(expected) = expected
            && expected != manifest.digest
        {
            return Err(RegistryError::new(ErrorKind::Protocol, action)
                .with_url(&url)
                .with_detail(format!("the body hashes to {}, not {expected}", manifest.digest)));
        }
        Ok(Some(manifest))
    }

    /// GETs a small blob (a config) whole, verifying its digest; refuses blobs over `max` bytes.
    pub async fn get_small_blob(&self, digest: &Digest, max: usize) -> Result<Bytes, RegistryError> {
        let action = format!("read blob {digest} from {}", self.name());
        let url = self.endpoint(&format!("blobs/{digest}"));
        let response = self.send(&action, &url, self.http().get(url.clone())).await?;
        if response.status() != StatusCode::OK {
            return Err(error_from(&action, &url, response).await);
        }
        let bytes = read_capped(&action, &url, response, max).await?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::new(ErrorKind::Protocol, action)
                .with_url(&url)
                .with_detail("the body does not hash to the digest asked for"));
        }
        Ok(bytes)
    }
}

async fn read_capped(
    action: &str,
    url: &url::Url,
    response: reqwest::Response,
    max: usize,
) -> Result<Bytes, RegistryError> {
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(RegistryError::new(ErrorKind::Protocol, action)
            .with_url(url)
            .with_detail(format!("larger than {max} bytes")));
    }
    let bytes = response.bytes().await.map_err(|e| RegistryError::from_transport(action, url, &e))?;
    if bytes.len() > max {
        return Err(RegistryError::new(ErrorKind::Protocol, action)
            .with_url(url)
            .with_detail(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}
