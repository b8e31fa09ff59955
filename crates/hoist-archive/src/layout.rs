use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hoist_oci::{Digest, ImageConfig, Platform, RawBlob, media_type};
use serde::Deserialize;

use crate::{ArchiveError, MAX_JSON_MEMBER, SliceReader, TarIndex};

/// Which tool's layout an archive has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` up to Docker 24: `<id>/layer.tar`, `<config>.json`, `manifest.json`.
    DockerClassic,
    /// `docker save` from Docker 25: an OCI layout plus the compatibility `manifest.json`.
    DockerOciLayout,
    /// containers/image `docker-archive` (podman, skopeo): `<hex>.tar` layers at the top.
    DockerArchive,
}

impl ArchiveFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerClassic => "docker-save-classic",
            Self::DockerOciLayout => "docker-save-oci",
            Self::DockerArchive => "docker-archive",
        }
    }
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a layer's bytes are stored in the archive, told by their magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    fn sniff(magic: &[u8]) -> Self {
        match magic {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::None,
        }
    }
}

/// One layer of an image, located in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The entry holding the bytes, after links are followed.
    pub entry: String,
    pub offset: u64,
    pub size: u64,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub compression: Compression,
}

/// One image: its tags, its config (exact bytes) and its layers in order.
#[derive(Clone, Debug)]
pub struct Image {
    pub tags: Vec<String>,
    pub config: RawBlob,
    pub platform: Platform,
    pub layers: Vec<Layer>,
}

/// An opened archive: the header index and the images found in it.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    file: Arc<File>,
    format: ArchiveFormat,
    images: Vec<Image>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl Archive {
    /// Opens a seekable archive, indexes it and finds its images.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
        let len = file.metadata().map_err(|e| ArchiveError::io(path, e))?.len();
        if len == 0 {
            return Err(ArchiveError::Empty { path: path.to_owned() });
        }
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| ArchiveError::io(path, e))?;
        let compression = match &magic[..n] {
            [0x1f, 0x8b, ..] => Some("gzip"),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Some("xz"),
            _ => None,
        };
        if let Some(compression) = compression {
            return Err(ArchiveError::Compressed { path: path.to_owned(), compression });
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| ArchiveError::io(path, e))?;
        let index = TarIndex::build(std::io::BufReader::new(&mut file), path, len)?;
        let file = Arc::new(file);
        let (format, images) = read_docker_manifest(path, &file, &index)?;
        Ok(Self { path: path.to_owned(), file, format, images })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// A reader over the stored bytes of `layer` (compressed if the archive
    /// stores it compressed). Readers are independent: use many at once.
    pub fn layer_reader(&self, layer: &Layer) -> SliceReader {
        SliceReader::new(Arc::clone(&self.file), layer.offset, layer.size)
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A member path named by `manifest.json` must stay inside the archive.
fn check_member_path(archive: &Path, name: &str) -> Result<(), ArchiveError> {
    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err(ArchiveError::BadEntry {
            path: archive.to_owned(),
            entry: name.to_owned(),
            reason: "manifest.json names a path outside the archive".into(),
        });
    }
    Ok(())
}

fn read_member(archive: &Path, file: &Arc<File>, index: &TarIndex, name: &str) -> Result<Vec<u8>, ArchiveError> {
    check_member_path(archive, name)?;
    let (resolved, entry) = index.resolve(name, archive)?;
    if entry.size > MAX_JSON_MEMBER {
        return Err(ArchiveError::BadEntry {
            path: archive.to_owned(),
            entry: resolved,
            reason: format!("it is {} bytes; JSON members over {MAX_JSON_MEMBER} bytes are refused", entry.size),
        });
    }
    let mut bytes = Vec::with_capacity(entry.size as usize);
    SliceReader::new(Arc::clone(file), entry.offset, entry.size)
        .read_to_end(&mut bytes)
        .map_err(|e| ArchiveError::io(archive, e))?;
    Ok(bytes)
}

fn read_docker_manifest(
    archive: &Path,
    file: &Arc<File>,
    index: &TarIndex,
) -> Result<(ArchiveFormat, Vec<Image>), ArchiveError> {
    if index.get("manifest.json").is_none() {
        return Err(ArchiveError::NoManifest { path: archive.to_owned() });
    }
    let bytes = read_member(archive, file, index, "manifest.json")?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes).map_err(|e| ArchiveError::BadEntry {
        path: archive.to_owned(),
        entry: "manifest.json".into(),
        reason: format!("it is not a docker save manifest ({e})"),
    })?;
    if entries.is_empty() {
        return Err(ArchiveError::NoImages { path: archive.to_owned() });
    }
    let format = if index.get("oci-layout").is_some() {
        ArchiveFormat::DockerOciLayout
    } else if entries.iter().flat_map(|e| &e.layers).any(|l| l.ends_with("/layer.tar")) {
        ArchiveFormat::DockerClassic
    } else {
        ArchiveFormat::DockerArchive
    };
    let images = entries
        .into_iter()
        .enumerate()
        .map(|(number, entry)| read_image(archive, file, index, number + 1, entry))
        .collect::<Result<_, _>>()?;
    Ok((format, images))
}

fn read_image(
    archive: &Path,
    file: &Arc<File>,
    index: &TarIndex,
    number: usize,
    entry: ManifestEntry,
) -> Result<Image, ArchiveError> {
    let inconsistent = |reason: String| ArchiveError::Inconsistent { path: archive.to_owned(), image: number, reason };
    let config_bytes = read_member(archive, file, index, &entry.config)?;
    let config = RawBlob::new(media_type::DOCKER_CONFIG, config_bytes);
    if let Some(named) = digest_in_name(&entry.config)
        && named != config.digest
    {
        return Err(inconsistent(format!(
            "config `{}` hashes to {}, not to the digest in its name",
            entry.config, config.digest
        )));
    }
    let view = ImageConfig::parse(&config.bytes).map_err(|e| ArchiveError::BadEntry {
        path: archive.to_owned(),
        entry: entry.config.clone(),
        reason: e.to_string(),
    })?;
    if view.diff_ids.len() != entry.layers.len() {
        return Err(inconsistent(format!(
            "manifest.json lists {} layers but the config's rootfs.diff_ids has {}",
            entry.layers.len(),
            view.diff_ids.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .zip(view.diff_ids)
        .map(|(name, diff_id)| {
            check_member_path(archive, name)?;
            let (resolved, tar_entry) = index.resolve(name, archive)?;
            let mut magic = [0u8; 4];
            let n = SliceReader::new(Arc::clone(file), tar_entry.offset, tar_entry.size)
                .read(&mut magic)
                .map_err(|e| ArchiveError::io(archive, e))?;
            Ok(Layer {
                entry: resolved,
                offset: tar_entry.offset,
                size: tar_entry.size,
                diff_id,
                compression: Compression::sniff(&magic[..n]),
            })
        })
        .collect::<Result<_, ArchiveError>>()?;
    Ok(Image { tags: entry.repo_tags.unwrap_or_default(), config, platform: view.platform, layers })
}

/// `abc….json`, `sha256:abc…` or `blobs/sha256/abc…` name their own digest.
fn digest_in_name(name: &str) -> Option<Digest> {
    let file = name.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").or_else(|| file.strip_prefix("sha256:")).unwrap_or(file);
    Digest::from_hex(hex).ok()
}
