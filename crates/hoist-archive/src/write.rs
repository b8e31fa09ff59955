//! Writing image archives in one pass, to a file or to standard output.
//!
//! An [`ArchivePlan`] lists every entry of the archive with its size before
//! any byte is written: the documents (manifests, indexes, configs) are in
//! memory, and every other blob's size comes from its descriptor. So a tar
//! header can always be written before its entry's bytes, nothing is staged,
//! and every entry's place in the file is known up front: a [`TarWriter`]
//! writes the plan front to back into any [`Write`] (standard output), and
//! [`ArchivePlan::write_frame`] lays out a file so blobs can be written into
//! their places by position, many at once.
//!
//! The layout is what `docker save` of Docker 25+ writes: an OCI image layout
//! (`oci-layout`, `blobs/sha256/<hex>`, `index.json`) plus, for Docker,
//! `manifest.json` (with `RepoTags`) and `repositories`, which every Docker
//! version's `docker load` reads. Blobs come first and the three documents
//! that name them last, so an archive cut short names no image.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use hoist_oci::{Descriptor, Digest, IndexBuilder, IndexEntry, RawBlob};
use serde::Serialize;

const BLOCK: u64 = 512;
/// tar ends with two zero blocks.
const END_OF_ARCHIVE: u64 = 2 * BLOCK;

/// Which archive to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// OCI layout plus `manifest.json` and `repositories`: `docker load` reads it.
    Docker,
    /// A pure OCI image layout.
    Oci,
}

/// One image as `manifest.json` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerImage {
    pub config: Digest,
    /// The layer blobs, in order, as stored in the archive.
    pub layers: Vec<Digest>,
    /// `RepoTags`: full names such as `registry.example.com/team/app:1.0`
    /// (Docker Hub's in docker's short form, `alpine:latest`).
    pub repo_tags: Vec<String>,
}

/// What an entry's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Known now: a document, a config, a directory (empty).
    Inline(Vec<u8>),
    /// A blob the caller supplies, exactly `size` bytes hashing to the digest.
    Blob(Digest),
}

/// One entry of the archive, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEntry {
    pub name: String,
    pub size: u64,
    pub content: Content,
    /// Where its header starts in the archive.
    pub header_offset: u64,
    directory: bool,
}

impl PlannedEntry {
    /// Where its bytes start in the archive.
    pub fn data_offset(&self) -> u64 {
        self.header_offset + BLOCK
    }

    /// The tar header (ustar; mode 0644, owner root, mtime 0, so the same
    /// images always make the same archive).
    pub fn header(&self) -> io::Result<[u8; 512]> {
        let mut header = tar::Header::new_ustar();
        header.set_path(&self.name)?;
        header.set_size(self.size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if self.directory {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_cksum();
        Ok(*header.as_bytes())
    }

    fn padding(&self) -> u64 {
        padded(self.size) - self.size
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// The path of a blob in the layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Collects what goes in an archive, then places every entry.
#[derive(Debug)]
pub struct ArchiveBuilder {
    kind: ArchiveKind,
    documents: Vec<RawBlob>,
    blobs: Vec<Descriptor>,
    seen: HashSet<Digest>,
    roots: Vec<IndexEntry>,
    images: Vec<DockerImage>,
}

impl ArchiveBuilder {
    pub fn new(kind: ArchiveKind) -> Self {
        Self {
            kind,
            documents: Vec::new(),
            blobs: Vec::new(),
            seen: HashSet::new(),
            roots: Vec::new(),
            images: Vec::new(),
        }
    }

    /// A document or config, stored under its digest (once, however often added).
    pub fn document(&mut self, blob: &RawBlob) -> &mut Self {
        if self.seen.insert(blob.digest.clone()) {
            self.documents.push(blob.clone());
        }
        self
    }

    /// A blob whose bytes the writer will be given (once, however often added).
    pub fn blob(&mut self, descriptor: &Descriptor) -> &mut Self {
        if self.seen.insert(descriptor.digest.clone()) {
            self.blobs.push(descriptor.clone());
        }
        self
    }

    /// An entry of `index.json`: a manifest or an index, with its names.
    pub fn root(&mut self, entry: IndexEntry) -> &mut Self {
        self.roots.push(entry);
        self
    }

    /// An image of `manifest.json` (Docker archives only; ignored for OCI).
    /// The same image added again only adds its tags.
    pub fn docker_image(&mut self, image: DockerImage) -> &mut Self {
        if let Some(known) = self.images.iter_mut().find(|i| i.config == image.config && i.layers == image.layers) {
            for tag in image.repo_tags {
                if !known.repo_tags.contains(&tag) {
                    known.repo_tags.push(tag);
                }
            }
        } else {
            self.images.push(image);
        }
        self
    }

    /// Places every entry: `oci-layout`, the documents, the blobs, then
    /// `index.json`, `manifest.json` and `repositories`.
    pub fn plan(&self) -> ArchivePlan {
        let mut plan = ArchivePlan { entries: Vec::new(), total: 0 };
        plan.push("oci-layout", Content::Inline(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()), false);
        plan.push("blobs/", Content::Inline(Vec::new()), true);
        plan.push("blobs/sha256/", Content::Inline(Vec::new()), true);
        for document in &self.documents {
            plan.push(&blob_path(&document.digest), Content::Inline(document.bytes.clone()), false);
        }
        for blob in &self.blobs {
            plan.push_blob(&blob.digest, blob.size);
        }
        let index = self.roots.iter().cloned().fold(IndexBuilder::new(), IndexBuilder::entry).build();
        plan.push("index.json", Content::Inline(index.bytes), false);
        if self.kind == ArchiveKind::Docker {
            plan.push("manifest.json", Content::Inline(self.manifest_json()), false);
            plan.push("repositories", Content::Inline(self.repositories()), false);
        }
        plan.total += END_OF_ARCHIVE;
        plan
    }

    fn manifest_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry<'a> {
            config: String,
            repo_tags: &'a [String],
            layers: Vec<String>,
        }
        let entries: Vec<Entry<'_>> = self
            .images
            .iter()
            .map(|image| Entry {
                config: blob_path(&image.config),
                repo_tags: &image.repo_tags,
                layers: image.layers.iter().map(blob_path).collect(),
            })
            .collect();
        serde_json::to_vec(&entries).expect("strings always serialise")
    }

    /// The pre-1.10 map of repository → tag → top layer, which old loaders
    /// fall back to and some tools still expect beside `manifest.json`.
    fn repositories(&self) -> Vec<u8> {
        let mut repositories: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        for image in &self.images {
            let Some(top) = image.layers.last() else { continue };
            for tag in &image.repo_tags {
                // The tag follows the last `:` after the last `/` (a port comes before it).
                let slash = tag.rfind('/').map_or(0, |i| i + 1);
                if let Some(colon) = tag[slash..].rfind(':') {
                    let (name, tag) = tag.split_at(slash + colon);
                    repositories.entry(name).or_default().insert(&tag[1..], top.hex());
                }
            }
        }
        serde_json::to_vec(&repositories).expect("strings always serialise")
    }
}

/// Every entry of an archive, in order and placed.
#[derive(Clone, Debug)]
pub struct ArchivePlan {
    entries: Vec<PlannedEntry>,
    total: u64,
}

impl ArchivePlan {
    fn push(&mut self, name: &str, content: Content, directory: bool) {
        let Content::Inline(bytes) = &content else { unreachable!("inline entries only") };
        let size = bytes.len() as u64;
        self.place(name, size, content, directory);
    }

    fn push_blob(&mut self, digest: &Digest, size: u64) {
        self.place(&blob_path(digest), size, Content::Blob(digest.clone()), false);
    }

    fn place(&mut self, name: &str, size: u64, content: Content, directory: bool) {
        let entry = PlannedEntry { name: name.to_owned(), size, content, header_offset: self.total, directory };
        self.total += BLOCK + padded(size);
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[PlannedEntry] {
        &self.entries
    }

    /// The archive's size in bytes.
    pub fn total_size(&self) -> u64 {
        self.total
    }

    /// Writes everything but the blobs' bytes into `file` at their places,
    /// and sets its length; the blobs are then written at their
    /// [`PlannedEntry::data_offset`]s, in any order and at once.
    #[cfg(unix)]
    pub fn write_frame(&self, file: &std::fs::File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.set_len(self.total)?;
        for entry in &self.entries {
            file.write_all_at(&entry.header()?, entry.header_offset)?;
            if let Content::Inline(bytes) = &entry.content {
                file.write_all_at(bytes, entry.data_offset())?;
            }
        }
        // Padding and the end blocks are the zeros `set_len` left.
        Ok(())
    }
}

/// Writes a plan front to back into `out`: each entry's header, then its
/// bytes (inline ones by itself; blobs as the caller hands them over, which
/// must come to exactly the planned size), then padding.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    /// Bytes of the current entry still expected.
    remaining: u64,
    padding: u64,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, remaining: 0, padding: 0, written: 0 }
    }

    /// Starts `entry`; an inline entry is written whole at once.
    pub fn begin(&mut self, entry: &PlannedEntry) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other(format!("an entry ended {} bytes short", self.remaining)));
        }
        if self.written != entry.header_offset {
            return Err(io::Error::other(format!("`{}` is out of order", entry.name)));
        }
        self.put(&entry.header()?)?;
        self.remaining = entry.size;
        self.padding = entry.padding();
        if let Content::Inline(bytes) = &entry.content {
            self.write_all(bytes)?;
            self.end()?;
        }
        Ok(())
    }

    /// Ends the current entry: it must be complete.
    pub fn end(&mut self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other(format!("the entry ended {} bytes short", self.remaining)));
        }
        let zeros = [0u8; BLOCK as usize];
        let padding = self.padding as usize;
        self.padding = 0;
        self.put(&zeros[..padding])
    }

    /// Writes the end-of-archive blocks and flushes; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; END_OF_ARCHIVE as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl<W: Write> Write for TarWriter<W> {
    /// Bytes of the current entry; more than planned is an error.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.remaining {
            return Err(io::Error::other(format!(
                "{} bytes more than the entry's planned size",
                buf.len() as u64 - self.remaining
            )));
        }
        let n = self.out.write(buf)?;
        self.remaining -= n as u64;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
