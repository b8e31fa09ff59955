//! Manifests: PUT, GET and HEAD.
//!
//! A manifest is always handled as exact bytes ([`RawBlob`]): its digest is
//! the sha256 of those bytes, so re-serialising it would change what it is.
//!
//! - [`Repository::put_manifest`] sends the bytes with `Content-Type` set to
//!   the blob's own media type (Docker v2, Docker manifest list, OCI
//!   manifest, OCI index: the registry stores and serves it under that type),
//!   refuses anything above 4 MiB before sending (distribution's limit), and
//!   checks the `Docker-Content-Digest` the registry answers with.
//! - [`Repository::get_manifest`] and [`Repository::head_manifest`] send an
//!   `Accept` naming all four types, or a registry may convert the manifest
//!   (Docker Hub answered schema 1 to clients that did not ask for more).
//!   GET reads at most 4 MiB and checks the bytes against the digest asked
//!   for and against `Docker-Content-Digest`. HEAD reads no body and is not
//!   counted as a pull by Docker Hub's rate limit: the way to resolve a tag.
//!
//! A digest that does not match is an [`ErrorKind::Mismatch`] error: the
//! registry, or something between it and us, is not serving what it says.
//! A PUT of an image manifest that names blobs of the other media-type
//! family (a zstd layer in a Docker manifest) is refused before sending:
//! distribution stores such manifests, but skopeo, podman and Quay refuse
//! them. Tags and digests are checked before any request.

use hoist_oci::{Digest, Document, RawBlob, Reference, media_type};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::repository::{error_from, header_length, header_str};
use crate::{DOCKER_CONTENT_DIGEST, ErrorKind, RegistryError, Repository};

/// distribution refuses manifests above this on PUT (`maxManifestBodySize`);
/// hoist refuses to send them and to read them.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// What a manifest HEAD tells without its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    /// The body's size (`Content-Length`).
    pub size: u64,
    /// `Content-Type` without parameters; empty if the registry sent none.
    pub media_type: String,
}

impl Repository {
    /// PUTs a manifest's exact bytes under `tag_or_digest` with
    /// `Content-Type: manifest.media_type` and returns the digest, after
    /// checking the registry computed the same one. Does not need a
    /// `Location` in the answer (not every registry sends one).
    pub async fn put_manifest(&self, tag_or_digest: &str, manifest: &RawBlob) -> Result<Digest, RegistryError> {
        self.put(tag_or_digest, manifest, true).await
    }

    /// [`Self::put_manifest`] for a manifest copied from another registry,
    /// bytes unchanged: one that mixes Docker and OCI media types is sent as
    /// it is (a copy keeps what the source holds; it is the destination's
    /// to refuse, and hoist did not write it).
    pub async fn put_copied_manifest(&self, tag_or_digest: &str, manifest: &RawBlob) -> Result<Digest, RegistryError> {
        self.put(tag_or_digest, manifest, false).await
    }

    async fn put(&self, tag_or_digest: &str, manifest: &RawBlob, families: bool) -> Result<Digest, RegistryError> {
        let action = format!("push manifest {} to {}:{tag_or_digest}", manifest.digest, self.name());
        check_tag_or_digest(&action, tag_or_digest)?;
        let url = self.endpoint(&format!("manifests/{tag_or_digest}"));
        if manifest.bytes.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::new(ErrorKind::Rejected, action)
                .with_url(&url)
                .with_detail(format!(
                    "the manifest is {} bytes; registries accept at most {MAX_MANIFEST_SIZE} (4 MiB)",
                    manifest.bytes.len()
                ))
                .with_hint("an image with this many layers or annotations cannot be pushed as one manifest"));
        }
        if let Some(problem) = mixed_families(manifest).filter(|_| families) {
            return Err(RegistryError::new(ErrorKind::Rejected, action).with_url(&url).with_detail(problem).with_hint(
                "Docker and OCI media types cannot be mixed in one manifest (skopeo, podman and Quay refuse it); \
                 zstd layers exist only in OCI images: push with `--format oci`, or `--recompress` them to gzip",
            ));
        }
        let request =
            self.http().put(url.clone()).header(CONTENT_TYPE, &manifest.media_type).body(manifest.bytes.clone());
        let response = self.send(&action, &url, request).await?;
        if !matches!(response.status(), StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED) {
            return Err(error_from(&action, &url, response).await);
        }
        check_reported(&action, &url, &response, &manifest.digest)?;
        Ok(manifest.digest.clone())
    }

    /// A GET or HEAD of the manifest under `tag_or_digest` with a full
    /// `Accept`: its URL and a 200 answer, or `None` for a 404.
    async fn ask_manifest(
        &self,
        action: &str,
        method: Method,
        tag_or_digest: &str,
    ) -> Result<Option<(Url, reqwest::Response)>, RegistryError> {
        check_tag_or_digest(action, tag_or_digest)?;
        let url = self.endpoint(&format!("manifests/{tag_or_digest}"));
        let request = self.http().request(method, url.clone()).header(ACCEPT, media_type::MANIFEST_ACCEPT);
        let response = self.send(action, &url, request).await?;
        match response.status() {
            StatusCode::OK => Ok(Some((url, response))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_from(action, &url, response).await),
        }
    }

    /// GETs the manifest under `tag_or_digest`, or `None` if there is none.
    /// The body is kept as exact bytes with the `Content-Type` served; it
    /// must hash to the digest asked for and to `Docker-Content-Digest`.
    pub async fn get_manifest(&self, tag_or_digest: &str) -> Result<Option<RawBlob>, RegistryError> {
        let action = format!("read manifest {}:{tag_or_digest}", self.name());
        let Some((url, response)) = self.ask_manifest(&action, Method::GET, tag_or_digest).await? else {
            return Ok(None);
        };
        let content_type = bare_media_type(&response);
        let reported = header_str(&response, DOCKER_CONTENT_DIGEST);
        let bytes = crate::wire::read_capped(&action, &url, response, MAX_MANIFEST_SIZE, self.stall_limit()).await?;
        let manifest = RawBlob::new(content_type, bytes.to_vec());
        if let Ok(asked) = Digest::parse(tag_or_digest)
            && asked != manifest.digest
        {
            return Err(mismatch(action, &url, format!("the body hashes to {}, not {asked}", manifest.digest)));
        }
        if let Some(reported) = reported {
            check_digest_header(&action, &url, &reported, &manifest.digest)?;
        }
        Ok(Some(manifest))
    }

    /// HEADs the manifest under `tag_or_digest`: its digest, size and media
    /// type without the body, or `None` if there is none. For a digest
    /// reference the registry's `Docker-Content-Digest` must be that digest.
    /// A registry that names no digest for a tag is asked with a GET (whose
    /// bytes are then verified), since a tag alone says nothing.
    pub async fn head_manifest(&self, tag_or_digest: &str) -> Result<Option<ManifestInfo>, RegistryError> {
        let action = format!("check manifest {}:{tag_or_digest}", self.name());
        let Some((url, response)) = self.ask_manifest(&action, Method::HEAD, tag_or_digest).await? else {
            return Ok(None);
        };
        let media_type = bare_media_type(&response);
        let size = header_length(&response);
        let asked = Digest::parse(tag_or_digest).ok();
        let reported = header_str(&response, DOCKER_CONTENT_DIGEST);
        let digest = match (asked, reported) {
            (Some(asked), Some(reported)) => {
                check_digest_header(&action, &url, &reported, &asked)?;
                asked
            }
            (Some(asked), None) => asked,
            (None, Some(reported)) => Digest::parse(reported.trim()).map_err(|_| {
                mismatch(action.clone(), &url, format!("`{DOCKER_CONTENT_DIGEST}: {reported}` is not a sha256 digest"))
            })?,
            (None, None) => {
                tracing::debug!(repository = self.name(), tag_or_digest, "no digest on a manifest HEAD; reading it");
                return Ok(self.get_manifest(tag_or_digest).await?.map(|m| ManifestInfo {
                    size: m.size(),
                    digest: m.digest,
                    media_type: m.media_type,
                }));
            }
        };
        Ok(Some(ManifestInfo { digest, size, media_type }))
    }
}

/// Refuses, before any request, what is neither a tag nor a digest by the
/// spec's grammar (the same check as [`Reference::parse`], whose property
/// tests cover it): a `/`, `..` or `?` must never reach the URL path.
fn check_tag_or_digest(action: &str, tag_or_digest: &str) -> Result<(), RegistryError> {
    let is_digest = Digest::parse(tag_or_digest).is_ok();
    let is_tag = Reference::from_parts("localhost", "x", Some(tag_or_digest))
        .is_ok_and(|r| r.tag() == Some(tag_or_digest) && r.digest().is_none());
    if is_digest || is_tag {
        return Ok(());
    }
    Err(RegistryError::new(ErrorKind::Rejected, action)
        .with_detail(format!("`{tag_or_digest}` is neither a tag nor a sha256 digest"))
        .with_hint("a tag is up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"))
}

/// Why `manifest` mixes the Docker and OCI media-type families, if it does:
/// an image manifest of one family whose config or layers name the other.
/// Other types (artifacts, lists and indexes) are not judged here.
pub fn mixed_families(manifest: &RawBlob) -> Option<String> {
    let other = match manifest.media_type.as_str() {
        media_type::DOCKER_MANIFEST => "application/vnd.oci.",
        media_type::OCI_MANIFEST => "application/vnd.docker.",
        _ => return None,
    };
    // Bytes that are not an image manifest are the registry's to judge (MANIFEST_INVALID).
    let Ok(Document::Manifest(image)) = Document::parse(manifest.clone()) else { return None };
    std::iter::once(&image.config)
        .chain(&image.layers)
        .find(|d| d.media_type.starts_with(other))
        .map(|d| format!("a {} names a blob of type {}", manifest.media_type, d.media_type))
}

/// `Content-Type` without parameters (`; charset=…`).
fn bare_media_type(response: &reqwest::Response) -> String {
    header_str(response, CONTENT_TYPE.as_str())
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

/// A `Docker-Content-Digest` in the answer, if any, must be `ours`.
fn check_reported(action: &str, url: &Url, response: &reqwest::Response, ours: &Digest) -> Result<(), RegistryError> {
    match header_str(response, DOCKER_CONTENT_DIGEST) {
        Some(reported) => check_digest_header(action, url, &reported, ours),
        None => Ok(()),
    }
}

fn check_digest_header(action: &str, url: &Url, reported: &str, ours: &Digest) -> Result<(), RegistryError> {
    if reported.trim() == ours.to_string() {
        return Ok(());
    }
    // A registry may name the manifest by another algorithm (sha512): that
    // is not a contradiction hoist can check.
    if !reported.trim().starts_with("sha256:") {
        tracing::debug!(reported, "Docker-Content-Digest with another algorithm; not compared");
        return Ok(());
    }
    Err(mismatch(
        action.to_owned(),
        url,
        format!("the registry's Docker-Content-Digest is {}, but the manifest's bytes hash to {ours}", reported.trim()),
    ))
}

fn mismatch(action: String, url: &Url, detail: String) -> RegistryError {
    RegistryError::new(ErrorKind::Mismatch, action).with_url(url).with_detail(detail).with_hint(
        "the registry, or a proxy in front of it, did not store or serve the manifest's exact bytes; \
         push again, and report it to the registry's operators if it persists",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(manifest_type: &str, config_type: &str, layer_types: &[&str]) -> RawBlob {
        let digest = Digest::of(b"x").to_string();
        let layers: Vec<_> =
            layer_types.iter().map(|t| serde_json::json!({"mediaType": t, "digest": digest, "size": 1})).collect();
        let document = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": digest, "size": 1},
            "layers": layers,
        });
        RawBlob::new(manifest_type, serde_json::to_vec(&document).unwrap())
    }

    #[test]
    fn only_tags_and_digests_are_accepted() {
        let digest = Digest::of(b"x").to_string();
        for good in ["1", "v1.0-rc_2", "latest", "_x", &"a".repeat(128), &digest] {
            assert!(check_tag_or_digest("read", good).is_ok(), "{good}");
        }
        let with_digest = format!("1@{digest}");
        for bad in ["", ".x", "-x", "a/b", "../../blobs/x", "a?b", "a b", "a:b", &"a".repeat(129), &with_digest] {
            let error = check_tag_or_digest("read", bad).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Rejected, "{bad}");
        }
    }

    #[test]
    fn image_manifests_never_mix_families() {
        use media_type::{
            DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD, OCI_MANIFEST,
        };
        assert_eq!(mixed_families(&image(DOCKER_MANIFEST, DOCKER_CONFIG, &[DOCKER_LAYER_GZIP, DOCKER_LAYER])), None);
        assert_eq!(mixed_families(&image(OCI_MANIFEST, OCI_CONFIG, &[OCI_LAYER_GZIP, OCI_LAYER_ZSTD])), None);
        let zstd_in_docker =
            mixed_families(&image(DOCKER_MANIFEST, DOCKER_CONFIG, &[DOCKER_LAYER_GZIP, OCI_LAYER_ZSTD]));
        assert!(zstd_in_docker.is_some_and(|p| p.contains(OCI_LAYER_ZSTD)));
        assert!(mixed_families(&image(OCI_MANIFEST, DOCKER_CONFIG, &[OCI_LAYER_GZIP])).is_some());
        // Artifacts carry their own types; lists and unparseable bytes are not judged here.
        assert_eq!(mixed_families(&image(OCI_MANIFEST, "application/vnd.cncf.helm.config.v1+json", &[])), None);
        assert_eq!(mixed_families(&RawBlob::new(media_type::OCI_INDEX, b"{}".to_vec())), None);
        assert_eq!(mixed_families(&RawBlob::new(DOCKER_MANIFEST, b"not json".to_vec())), None);
    }
}
