use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use crate::ArchiveError;

/// What a tar entry is, as far as an image reader cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A symbolic link; the target is relative to the link's directory.
    Symlink(String),
    /// A hard link; the target is a path from the archive root.
    HardLink(String),
    /// Sparse files, devices, FIFOs: never a valid image member.
    Other(String),
}

/// Where an entry's bytes lie in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub offset: u64,
    pub size: u64,
    pub kind: EntryKind,
}

/// Every entry of a tar, by normalised name, from one pass over the headers.
#[derive(Debug, Default)]
pub struct TarIndex {
    entries: HashMap<String, TarEntry>,
}

const MAX_LINK_HOPS: usize = 32;
/// Entries indexed at most. The index costs about 170 bytes an entry, so
/// this bounds it near 17 MiB; `docker save` writes a few entries per layer
/// (a 2 GB archive of 50,000 entries is the largest in the benchmarks).
pub const MAX_ENTRIES: usize = 100_000;

impl TarIndex {
    /// Reads the headers of a seekable tar, skipping every body with a seek.
    /// `path` and `file_len` are for messages and the truncation check.
    pub fn build<R: Read + Seek>(reader: R, path: &Path, file_len: u64) -> Result<Self, ArchiveError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries_with_seek().map_err(|e| ArchiveError::io(path, e))?;
        let mut index = Self::default();
        for (position, entry) in entries.enumerate() {
            let entry = entry.map_err(|e| entry_error(path, position, &e))?;
            let Some((name, described)) = describe(&entry, path, position)? else { continue };
            if described.kind == EntryKind::File && described.offset.saturating_add(described.size) > file_len {
                return Err(ArchiveError::Truncated {
                    path: path.to_owned(),
                    entry: name,
                    needed: described.offset.saturating_add(described.size),
                    available: file_len,
                });
            }
            index.insert(name, described, path)?;
        }
        index.finish(path)
    }

    /// Records an entry; a later entry of the same name replaces the earlier.
    /// Refuses the entry past [`MAX_ENTRIES`] (`path` names the archive).
    pub(crate) fn insert(&mut self, name: String, entry: TarEntry, path: &Path) -> Result<(), ArchiveError> {
        if let Some(earlier) = self.entries.get_mut(&name) {
            tracing::debug!(entry = %name, "duplicate entry name; the later one wins, as in tar");
            *earlier = entry;
        } else if self.entries.len() >= MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries { path: path.to_owned(), limit: MAX_ENTRIES });
        } else {
            self.entries.insert(name, entry);
        }
        Ok(())
    }

    pub(crate) fn finish(self, path: &Path) -> Result<Self, ArchiveError> {
        if self.entries.is_empty() {
            return Err(ArchiveError::NotTar { path: path.to_owned(), detail: " (it has no entries)".into() });
        }
        Ok(self)
    }

    /// The entry stored under `name` (normalised), without following links.
    pub fn get(&self, name: &str) -> Option<&TarEntry> {
        normalize(name).and_then(|n| self.entries.get(&n))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Follows symbolic and hard links from `name` to a regular file.
    /// Returns the final name and its entry.
    pub fn resolve(&self, name: &str, archive: &Path) -> Result<(String, &TarEntry), ArchiveError> {
        let bad = |entry: &str, reason: String| ArchiveError::BadEntry {
            path: archive.to_owned(),
            entry: entry.to_owned(),
            reason,
        };
        let mut current = normalize(name).ok_or_else(|| bad(name, "the path escapes the archive root".into()))?;
        for _ in 0..MAX_LINK_HOPS {
            let entry = self
                .entries
                .get(&current)
                .ok_or_else(|| ArchiveError::MissingEntry { path: archive.to_owned(), entry: current.clone() })?;
            let next = match &entry.kind {
                EntryKind::File => return Ok((current, entry)),
                EntryKind::Symlink(target) => {
                    let base = current.rsplit_once('/').map_or("", |(dir, _)| dir);
                    let joined = if target.starts_with('/') { target.clone() } else { format!("{base}/{target}") };
                    normalize(&joined)
                        .ok_or_else(|| bad(&current, format!("its link target `{target}` escapes the archive root")))?
                }
                EntryKind::HardLink(target) => normalize(target)
                    .ok_or_else(|| bad(&current, format!("its link target `{target}` escapes the archive root")))?,
                EntryKind::Directory => return Err(bad(&current, "it is a directory, not a file".into())),
                EntryKind::Other(kind) => {
                    return Err(bad(&current, format!("it is a {kind} entry, not a regular file")));
                }
            };
            current = next;
        }
        Err(bad(name, "its links form a loop".into()))
    }
}

/// The error for a header that cannot be read: the first one means the
/// input is no tar at all.
pub(crate) fn entry_error(path: &Path, position: usize, error: &std::io::Error) -> ArchiveError {
    if position == 0 {
        ArchiveError::NotTar { path: path.to_owned(), detail: format!(" ({error})") }
    } else if error.kind() == std::io::ErrorKind::UnexpectedEof
        // The tar crate reports a cut header with these words and no kind.
        || error.to_string().contains("failed to read entire block")
        || error.to_string().contains("unexpected EOF")
    {
        ArchiveError::BadEntry {
            path: path.to_owned(),
            entry: format!("#{}", position + 1),
            reason: "the archive ends inside it (it was cut short)".into(),
        }
    } else {
        ArchiveError::BadEntry { path: path.to_owned(), entry: format!("#{}", position + 1), reason: error.to_string() }
    }
}

/// The normalised name and location of a tar entry; `None` for an entry
/// whose name escapes the archive root (it can never be referenced).
pub(crate) fn describe<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
    position: usize,
) -> Result<Option<(String, TarEntry)>, ArchiveError> {
    let raw_name = entry.path().map_err(|e| ArchiveError::BadEntry {
        path: path.to_owned(),
        entry: format!("#{}", position + 1),
        reason: e.to_string(),
    })?;
    let raw_name = raw_name.to_string_lossy().into_owned();
    let Some(name) = normalize(&raw_name) else {
        tracing::debug!(entry = %raw_name, "ignoring an entry whose name escapes the archive root");
        return Ok(None);
    };
    let header = entry.header();
    if let Some(reason) = size_field_overflows(header) {
        return Err(ArchiveError::BadEntry { path: path.to_owned(), entry: name, reason });
    }
    let link = || entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Directory,
        tar::EntryType::Symlink => EntryKind::Symlink(link()),
        tar::EntryType::Link => EntryKind::HardLink(link()),
        tar::EntryType::GNUSparse => EntryKind::Other("sparse".into()),
        other => EntryKind::Other(format!("{other:?}")),
    };
    Ok(Some((name, TarEntry { offset: entry.raw_file_position(), size: entry.size(), kind })))
}

/// Why the header's size field cannot be a size, if it cannot: the tar
/// crate reads a base-256 (GNU binary) size modulo 2^64 and a negative one
/// as huge, where GNU tar and Python refuse both.
fn size_field_overflows(header: &tar::Header) -> Option<String> {
    let field = &header.as_bytes()[124..136];
    if field[0] & 0x80 == 0 {
        return None;
    }
    // Base-256: the first byte's low 7 bits and the next three bytes come
    // above 64 bits (a 0xff first byte is a negative number).
    if field[0] == 0x80 && field[1..4].iter().all(|b| *b == 0) {
        return None;
    }
    Some("its size field holds a number that is negative or does not fit in 64 bits".into())
}

/// `./a//b/../c` → `a/c`; `None` if the path climbs above the root. A leading
/// `/` is dropped, as tar does when extracting.
pub(crate) fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_strips_dots_and_refuses_escapes() {
        assert_eq!(normalize("./manifest.json").as_deref(), Some("manifest.json"));
        assert_eq!(normalize("a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../etc/passwd"), None);
        assert_eq!(normalize("a/../../b"), None);
        assert_eq!(normalize("."), None);
    }

    /// GNU tar and Python refuse a base-256 size past 64 bits; the tar crate
    /// reads it modulo 2^64 (2^80 as 0).
    #[test]
    fn a_base_256_size_past_64_bits_is_refused() {
        let mut header = tar::Header::new_gnu();
        header.set_path("layer.tar").unwrap();
        header.set_size(0);
        let mut bytes = header.as_bytes().to_vec();
        bytes[124..136].copy_from_slice(&[0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut header = tar::Header::from_byte_slice(&bytes).clone();
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.resize(4096, 0);
        let error =
            super::TarIndex::build(std::io::Cursor::new(&bytes), std::path::Path::new("x.tar"), 4096).unwrap_err();
        assert!(error.to_string().contains("does not fit in 64 bits"), "{error}");
    }

    #[test]
    fn a_size_near_u64_max_is_an_error_not_an_overflow() {
        let mut header = tar::Header::new_gnu();
        header.set_path("layer.tar").unwrap();
        header.set_size(u64::MAX - 100);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.resize(4096, 0);
        let error =
            super::TarIndex::build(std::io::Cursor::new(&bytes), std::path::Path::new("x.tar"), 4096).unwrap_err();
        assert!(error.to_string().contains("size overflow"), "{error}");
    }
}
