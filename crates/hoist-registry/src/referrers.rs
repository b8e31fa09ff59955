//! The referrers API of OCI distribution 1.1: which manifests (signatures,
//! SBOMs, attestations) name a manifest as their `subject`.
//!
//! `GET /v2/<name>/referrers/<digest>` with `Accept:
//! application/vnd.oci.image.index.v1+json` answers an image index whose
//! `manifests` are the referrers' descriptors (with `artifactType` and
//! annotations). A registry without the API (CNCF distribution 2.8, GHCR)
//! answers 404, which the spec forbids a registry with it to do; clients
//! then use the tag schema, an index tagged `sha256-<hex>` (the caller's
//! business: it is an ordinary manifest GET).

use hoist_oci::{Digest, RawBlob, media_type};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::repository::{error_from, header_str};
use crate::{MAX_MANIFEST_SIZE, RegistryError, Repository};

impl Repository {
    /// The referrers of manifest `digest` as the registry lists them (an
    /// image index, its bytes as served, read up to 4 MiB), or `None` when
    /// the registry has no referrers API.
    pub async fn referrers(&self, digest: &Digest) -> Result<Option<RawBlob>, RegistryError> {
        let action = format!("list the referrers of {digest} in {}", self.name());
        let url = self.endpoint(&format!("referrers/{digest}"));
        let request = self.http().get(url.clone()).header(ACCEPT, media_type::OCI_INDEX);
        let response = self.send(&action, &url, request).await?;
        match response.status() {
            StatusCode::OK => {}
            // No such route: a registry without the API. (405 and 501 are
            // what other servers say for a route they do not serve.)
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => return Ok(None),
            _ => return Err(error_from(&action, &url, response).await),
        }
        let served = header_str(&response, CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = crate::wire::read_capped(&action, &url, response, MAX_MANIFEST_SIZE, self.stall_limit()).await?;
        let media = served.split(';').next().unwrap_or_default().trim();
        Ok(Some(RawBlob::new(if media.is_empty() { media_type::OCI_INDEX } else { media }, bytes.to_vec())))
    }
}
