//! Image archives built in memory, one builder per layout.
//!
//! Everything is deterministic (fixed mtimes, sorted JSON), so a fixture has
//! the same digests on every run.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{sha256, sha256_hex};

mod layouts;
pub use layouts::{DockerArchive, DockerSaveOci, LayerCompression, OciArchive, gzip, xz, zstd, zstd_long};

/// A tar of `files` (path, contents) with fixed metadata: a layer's bytes.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = TarWriter::new();
    for (path, contents) in files {
        tar.file(path, contents);
    }
    tar.finish()
}

/// A layer holding `size` bytes that do not compress (a xorshift stream
/// seeded by `seed`), like the random-data layer of the benchmarks.
pub fn incompressible_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    layer_tar(&[("random.bin", &data)])
}

/// One image: tags, layers (uncompressed tars) and a platform.
#[derive(Clone, Debug)]
pub struct ImageFixture {
    pub tags: Vec<String>,
    pub layers: Vec<Vec<u8>>,
    pub os: String,
    pub architecture: String,
}

impl Default for ImageFixture {
    fn default() -> Self {
        Self { tags: Vec::new(), layers: Vec::new(), os: "linux".into(), architecture: "amd64".into() }
    }
}

impl ImageFixture {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    #[must_use]
    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(tar);
        self
    }

    /// `sha256:` of each layer: the config's `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256(l)).collect()
    }

    /// The image config's exact bytes.
    pub fn config(&self) -> Vec<u8> {
        let config = serde_json::json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": { "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": self.diff_ids() },
            "history": self.layers.iter().map(|_| serde_json::json!({"created_by": "hoist-testkit"})).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&config).expect("config serialises")
    }

    /// `sha256:` of the config: the image ID docker shows.
    pub fn config_digest(&self) -> String {
        sha256(&self.config())
    }
}

/// The `docker save` layout of Docker ≤ 24: `<v1-id>/{VERSION,json,layer.tar}`,
/// `<config-hex>.json`, `manifest.json`, `repositories`. A layer already
/// written is written again as a symlink to the first copy, as docker does.
#[derive(Clone, Debug, Default)]
pub struct DockerSaveClassic {
    images: Vec<ImageFixture>,
    hard_links: bool,
    prefix: &'static str,
}

impl DockerSaveClassic {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn image(mut self, image: ImageFixture) -> Self {
        self.images.push(image);
        self
    }

    /// Repeated layers as hard links (to the archive path of the first copy)
    /// instead of docker's symlinks.
    #[must_use]
    pub fn hard_links(mut self) -> Self {
        self.hard_links = true;
        self
    }

    /// Every entry name starts with `./`, as `tar -C dir .` writes them.
    #[must_use]
    pub fn dot_slash(mut self) -> Self {
        self.prefix = "./";
        self
    }

    /// The archive's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut tar = TarWriter::with_prefix(self.prefix);
        let mut written: BTreeMap<String, String> = BTreeMap::new(); // diff_id → first layer.tar path
        let mut dirs: Vec<String> = Vec::new();
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for image in &self.images {
            let mut parent = String::new();
            let mut layer_paths = Vec::new();
            for (layer, diff_id) in image.layers.iter().zip(image.diff_ids()) {
                let v1_id = sha256_hex(format!("{parent}\n{diff_id}").as_bytes());
                let path = format!("{v1_id}/layer.tar");
                if !dirs.contains(&v1_id) {
                    dirs.push(v1_id.clone());
                    tar.dir(&v1_id);
                    tar.file(&format!("{v1_id}/VERSION"), b"1.0");
                    tar.file(&format!("{v1_id}/json"), format!(r#"{{"id":"{v1_id}"}}"#).as_bytes());
                    match written.get(&diff_id) {
                        Some(first) if self.hard_links => tar.hardlink(&path, first),
                        Some(first) => tar.symlink(&path, &format!("../{first}")),
                        None => {
                            tar.file(&path, layer);
                            written.insert(diff_id.clone(), path.clone());
                        }
                    }
                }
                layer_paths.push(path);
                parent = v1_id;
            }
            let config_hex = sha256_hex(&image.config());
            tar.file(&format!("{config_hex}.json"), &image.config());
            manifest.push(serde_json::json!({
                "Config": format!("{config_hex}.json"),
                "RepoTags": if image.tags.is_empty() { serde_json::Value::Null } else { serde_json::json!(image.tags) },
                "Layers": layer_paths,
            }));
            for tag in &image.tags {
                let (name, tag) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
                repositories.entry(name.to_owned()).or_default().insert(tag.to_owned(), parent.clone());
            }
        }
        tar.file("manifest.json", &serde_json::to_vec(&manifest).expect("manifest serialises"));
        if !repositories.is_empty() {
            tar.file("repositories", &serde_json::to_vec(&repositories).expect("repositories serialises"));
        }
        tar.finish()
    }

    /// Writes the archive to `path`.
    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, self.build()).expect("write fixture archive");
    }
}

/// A tar writer with fixed metadata (mode 0644/0755, uid 0, mtime 0).
pub struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    prefix: &'static str,
}

impl std::fmt::Debug for TarWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarWriter").finish_non_exhaustive()
    }
}

impl Default for TarWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TarWriter {
    pub fn new() -> Self {
        Self::with_prefix("")
    }

    /// A writer that puts `prefix` (such as `./`) before every entry name and
    /// hard-link target.
    pub fn with_prefix(prefix: &'static str) -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder, prefix }
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    pub fn file(&mut self, path: &str, contents: &[u8]) {
        self.file_with_mode(path, contents, 0o644);
    }

    pub fn executable(&mut self, path: &str, contents: &[u8]) {
        self.file_with_mode(path, contents, 0o755);
    }

    fn file_with_mode(&mut self, path: &str, contents: &[u8], mode: u32) {
        let header = Self::header(tar::EntryType::Regular, contents.len() as u64, mode);
        self.append(header, path, None, contents);
    }

    pub fn dir(&mut self, path: &str) {
        let header = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.append(header, path, None, &[]);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let header = Self::header(tar::EntryType::Symlink, 0, 0o777);
        self.append(header, path, Some(target.to_owned()), &[]);
    }

    pub fn hardlink(&mut self, path: &str, target: &str) {
        let header = Self::header(tar::EntryType::Link, 0, 0o644);
        self.append(header, path, Some(format!("{}{target}", self.prefix)), &[]);
    }

    /// A GNU sparse file entry holding `contents` as its one data segment.
    pub fn sparse_file(&mut self, path: &str, contents: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        let gnu = header.as_gnu_mut().expect("a GNU header");
        gnu.sparse[0].set_offset(0);
        gnu.sparse[0].set_length(contents.len() as u64);
        gnu.set_real_size(contents.len() as u64);
        self.append(header, path, None, contents);
    }

    /// Writes the name bytes as given (tar's own path setter drops `./` and
    /// refuses `..` and absolute paths, which hostile fixtures need).
    fn append(&mut self, mut header: tar::Header, path: &str, link: Option<String>, contents: &[u8]) {
        let path = format!("{}{path}", self.prefix);
        assert!(path.len() <= 100 && link.as_ref().is_none_or(|l| l.len() <= 100), "fixture names fit a tar header");
        let old = header.as_old_mut();
        old.name.fill(0);
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            old.linkname.fill(0);
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        self.builder.append(&header, contents).expect("append entry");
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }
}
