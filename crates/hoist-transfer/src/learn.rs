//! Learning what layers became at the destination, with an empty cache.
//!
//! If a tag we are about to push already names an image there, its manifest
//! pairs each layer's compressed digest with the config's diff_id at the same
//! position. Re-pushing an image that is already there could then compress
//! nothing: each layer a HEAD by the learned digest. But anyone who can push
//! to that tag can pair a config with other blobs, so a pairing is only a
//! candidate: [`prove`] streams the blob down, decompresses it and hashes it,
//! and only a blob that is the layer is used (far cheaper than compressing
//! it again). Everything here is an optimisation: lookups are tried once
//! with a short time limit, and any failure just means learning nothing.

use std::collections::HashMap;

use hoist_archive::{Compression, LayerHasher};
use hoist_oci::{Digest, ImageConfig, ManifestFormat, Reference, media_type};
use hoist_registry::Repository;
use serde::Deserialize;

use crate::pipeline::SentBlob;

/// Configs larger than this are not worth fetching for a hint.
const MAX_CONFIG: usize = 4 * 1024 * 1024;
/// Bytes in flight between a proof's download and its hashing thread.
const PROOF_PIPE: usize = 1024 * 1024;

#[derive(Deserialize)]
struct ManifestView {
    config: DescriptorView,
    #[serde(default)]
    layers: Vec<DescriptorView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorView {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: u64,
}

/// diff_id → the blob the images under `tags` in `repo` claim it is: a
/// candidate for [`prove`], never a fact.
pub(crate) async fn from_destination(
    repo: &Repository,
    tags: &[&Reference],
    format: ManifestFormat,
) -> HashMap<Digest, SentBlob> {
    let repo = repo.for_lookup();
    let mut learned = HashMap::new();
    for tag in tags {
        match learn_one(&repo, tag, format).await {
            Ok(pairs) => learned.extend(pairs),
            Err(reason) => tracing::debug!("learned nothing from {tag}: {reason}"),
        }
    }
    learned
}

async fn learn_one(
    repo: &Repository,
    tag: &Reference,
    format: ManifestFormat,
) -> Result<Vec<(Digest, SentBlob)>, String> {
    let Some(manifest) = repo.get_manifest(&tag.tag_or_digest()).await.map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    if ![media_type::DOCKER_MANIFEST, media_type::OCI_MANIFEST].contains(&manifest.media_type.as_str()) {
        return Err(format!("it is a {}, not an image manifest", manifest.media_type));
    }
    let view: ManifestView = serde_json::from_slice(&manifest.bytes).map_err(|e| e.to_string())?;
    let config = repo.get_small_blob(&view.config.digest, MAX_CONFIG).await.map_err(|e| e.to_string())?;
    let config = ImageConfig::parse(&config).map_err(|e| e.to_string())?;
    if config.diff_ids.len() != view.layers.len() {
        return Err("its layer count differs from its config's diff_ids".into());
    }
    let pairs = config
        .diff_ids
        .into_iter()
        .zip(view.layers)
        .filter_map(|(diff_id, layer)| {
            let blob = SentBlob::from_cached(&layer.digest, layer.size, &layer.media_type);
            // zstd layers exist only in OCI manifests; never mix families.
            let usable = layer.media_type.contains("tar") && (!blob.zstd || format == ManifestFormat::Oci);
            usable.then_some((diff_id, blob))
        })
        .collect();
    Ok(pairs)
}

/// Whether `candidate` in `repo` really is the layer `diff_id`: its bytes,
/// streamed down (no more than its recorded size), decompressed as its
/// media type says, hash to `diff_id`. Any failure is a "no".
pub(crate) async fn prove(repo: &Repository, diff_id: &Digest, candidate: &SentBlob) -> bool {
    let repo = repo.for_lookup();
    let compression = match candidate.suffix() {
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        _ => Compression::None,
    };
    let (mut writer, reader) = tokio::io::duplex(PROOF_PIPE);
    let hashing = tokio::task::spawn_blocking(move || {
        let reader = tokio_util::io::SyncIoBridge::new(reader);
        LayerHasher::default().hash(reader, compression)
    });
    let downloaded = repo.download_blob(&candidate.digest, candidate.size, &mut writer).await;
    drop(writer);
    let hash_result = hashing.await;
    match (downloaded, hash_result) {
        (Ok(size), Ok(Ok(hashes))) if size == candidate.size && hashes.diff_id == *diff_id => true,
        (Ok(_), Ok(Ok(hashes))) => {
            tracing::debug!(%diff_id, blob = %candidate.digest, actual = %hashes.diff_id, "a learned layer is not what its tag claims");
            false
        }
        (downloaded, failed) => {
            tracing::debug!(%diff_id, blob = %candidate.digest, ?downloaded, ok = failed.is_ok(), "could not prove a learned layer");
            false
        }
    }
}
