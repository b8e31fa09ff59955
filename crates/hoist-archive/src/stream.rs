//! One sequential pass over an archive that cannot seek: standard input, or
//! a gzip-, zstd- or xz-wrapped file.
//!
//! Nothing is copied to disk and memory stays bounded: JSON members
//! (manifests, configs, indexes) are kept, up to [`MAX_KEPT_JSON`] in all;
//! every entry that may be a layer (a tar, gzip or zstd stream) is handed to
//! a [`LayerVisitor`] as it streams by, and what the visitor leaves unread is
//! skipped. The images are known only at the end (a classic `docker save`
//! writes `manifest.json` after the layers), so the visitor sees each
//! candidate by entry name and decides what to keep (a digest, an upload
//! session); [`StreamedArchive::images`] then names each layer's entry, links
//! already followed, and [`StreamedArchive::verify`] matches hashes taken on
//! the fly ([`HashingVisitor`]) against the diff_ids.

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::index::{describe, entry_error};
use crate::layout::{self, Members};
use crate::sniff;
use crate::{
    ArchiveError, ArchiveFormat, Compression, EntryKind, Image, LayerHasher, LayerHashes, MAX_JSON_MEMBER, TarEntry,
    TarIndex,
};

/// All JSON members kept during a streaming pass together stay under this.
pub const MAX_KEPT_JSON: u64 = 64 * 1024 * 1024;

/// Members named like JSON but holding something else are kept up to this size.
const MAX_OTHER_KEPT: u64 = 64 * 1024;

/// What wraps a whole archive, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapper {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Wrapper {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
        }
    }

    pub fn sniff(magic: &[u8]) -> Self {
        match (Compression::sniff(magic), magic) {
            (Compression::Gzip, _) => Self::Gzip,
            (Compression::Zstd, _) => Self::Zstd,
            (Compression::None, [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..]) => Self::Xz,
            (Compression::None, _) => Self::None,
        }
    }

    /// Sniffs the start of `file` and rewinds it.
    pub fn sniff_file(file: &mut File) -> io::Result<Self> {
        file.seek(SeekFrom::Start(0))?;
        let mut magic = [0u8; 6];
        let n = read_up_to(file, &mut magic)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Self::sniff(&magic[..n]))
    }
}

/// An entry that may be a layer, as the stream passes it.
#[derive(Clone, Debug)]
pub struct StreamedBlob<'a> {
    /// The normalised entry name; [`crate::Layer::entry`] uses the same names.
    pub name: &'a str,
    /// Stored size in bytes.
    pub size: u64,
    pub compression: Compression,
}

/// Receives each entry that may be a layer, in archive order, with a reader
/// over its stored bytes. Unread bytes are skipped after it returns. An
/// entry name can repeat; as in tar, the later entry is the one that counts.
pub trait LayerVisitor {
    fn blob(&mut self, blob: &StreamedBlob<'_>, bytes: &mut dyn Read) -> Result<(), Box<dyn Error + Send + Sync>>;
}

/// Leaves every blob unread: enough to learn what the archive holds.
#[derive(Debug, Default)]
pub struct SkipBlobs;

impl LayerVisitor for SkipBlobs {
    fn blob(&mut self, _: &StreamedBlob<'_>, _: &mut dyn Read) -> Result<(), Box<dyn Error + Send + Sync>> {
        Ok(())
    }
}

/// Hashes every blob as it passes (decompressing gzip and zstd), by name.
#[derive(Debug, Default)]
pub struct HashingVisitor {
    pub hashes: HashMap<String, LayerHashes>,
    hasher: LayerHasher,
}

impl LayerVisitor for HashingVisitor {
    fn blob(&mut self, blob: &StreamedBlob<'_>, bytes: &mut dyn Read) -> Result<(), Box<dyn Error + Send + Sync>> {
        let hashes = self.hasher.hash(bytes, blob.compression)?;
        self.hashes.insert(blob.name.to_owned(), hashes);
        Ok(())
    }
}

/// What a streaming pass found.
#[derive(Debug)]
pub struct StreamedArchive {
    label: PathBuf,
    wrapper: Wrapper,
    format: ArchiveFormat,
    images: Vec<Image>,
}

impl StreamedArchive {
    /// The archive's name in messages: its path, or `-`.
    pub fn label(&self) -> &Path {
        &self.label
    }

    /// What wrapped the tar.
    pub fn wrapper(&self) -> Wrapper {
        self.wrapper
    }

    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    /// The images; each [`crate::Layer::entry`] names the streamed blob that
    /// holds it (its `offset` is a position in the stream, not for reading).
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// Checks every layer against hashes taken during the pass.
    pub fn verify(&self, hashes: &HashMap<String, LayerHashes>) -> Result<(), ArchiveError> {
        for layer in self.images.iter().flat_map(|i| &i.layers) {
            let Some(found) = hashes.get(&layer.entry) else {
                return Err(ArchiveError::BadEntry {
                    path: self.label.clone(),
                    entry: layer.entry.clone(),
                    reason: "it does not look like a layer (neither tar, gzip nor zstd)".into(),
                });
            };
            found.check(&self.label, layer)?;
        }
        Ok(())
    }
}

/// Reads an archive from `input` in one sequential pass. `label` names it in
/// messages (`-` for standard input). Any wrapper is detected and removed.
pub fn read_stream<'r>(
    input: impl Read + 'r,
    label: impl AsRef<Path>,
    visitor: &mut dyn LayerVisitor,
) -> Result<StreamedArchive, ArchiveError> {
    let label = label.as_ref();
    let mut input = input;
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut input, &mut magic).map_err(|e| ArchiveError::io(label, e))?;
    if n == 0 {
        return Err(ArchiveError::Empty { path: label.to_owned() });
    }
    let wrapper = Wrapper::sniff(&magic[..n]);
    let raw = io::BufReader::with_capacity(256 * 1024, Cursor::new(magic[..n].to_vec()).chain(input));
    let tar: Box<dyn Read + 'r> = match wrapper {
        Wrapper::None => Box::new(raw),
        Wrapper::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Wrapper::Zstd => Box::new(crate::zstd_reader(raw).map_err(|e| ArchiveError::io(label, e))?),
        Wrapper::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(raw)),
    };
    let members = pass(tar, label, wrapper, visitor)?;
    let (format, images) = layout::discover(&members)?;
    Ok(StreamedArchive { label: label.to_owned(), wrapper, format, images })
}

struct StreamMembers<'a> {
    label: &'a Path,
    index: TarIndex,
    kept: HashMap<String, Vec<u8>>,
    compressions: HashMap<String, Compression>,
}

impl Members for StreamMembers<'_> {
    fn label(&self) -> &Path {
        self.label
    }

    fn index(&self) -> &TarIndex {
        &self.index
    }

    fn small(&self, name: &str, _entry: &TarEntry) -> Result<Vec<u8>, ArchiveError> {
        self.kept.get(name).cloned().ok_or_else(|| ArchiveError::BadEntry {
            path: self.label.to_owned(),
            entry: name.to_owned(),
            reason: "it is not JSON, so it was not kept while streaming".into(),
        })
    }

    fn compression(&self, name: &str, _entry: &TarEntry) -> Result<Compression, ArchiveError> {
        Ok(self.compressions.get(name).copied().unwrap_or(Compression::None))
    }
}

/// What the first bytes of a regular entry say it is.
enum Kind {
    Blob(Compression),
    Json,
    Other,
}

fn classify(name: &str, peek: &[u8], size: u64) -> Kind {
    match Compression::sniff(peek) {
        Compression::None => {}
        compressed => return Kind::Blob(compressed),
    }
    if peek.len() >= 512 {
        let block = &peek[..512];
        if block.iter().all(|&b| b == 0) || tar_checksum_ok(block) {
            return Kind::Blob(Compression::None);
        }
    }
    let first = peek.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) && size <= MAX_JSON_MEMBER {
        return Kind::Json;
    }
    // A small member under a name that layouts read as JSON is kept even if
    // it is not JSON, so a broken `manifest.json` gets the same message as
    // from a file. Other loose files are not kept: an archive may hold many.
    let json_name =
        Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || name.starts_with("blobs/");
    if json_name && size <= MAX_OTHER_KEPT { Kind::Json } else { Kind::Other }
}

/// A tar header block: its checksum field matches the sum of its bytes with
/// the field itself counted as spaces.
pub(crate) fn tar_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let digits: String = field.iter().map(|&b| b as char).filter(char::is_ascii_digit).collect::<String>();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else { return false };
    let sum: u32 =
        block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    stored == sum
}

/// Counts the bytes read: a cut stream ends an entry early without an
/// error, which only the count reveals.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn pass<'a>(
    mut tar: Box<dyn Read + '_>,
    label: &'a Path,
    wrapper: Wrapper,
    visitor: &mut dyn LayerVisitor,
) -> Result<StreamMembers<'a>, ArchiveError> {
    // The first block, kept to say what the input is if it is no tar.
    let mut head = vec![0u8; sniff::HEAD];
    let n = read_up_to(&mut tar, &mut head).map_err(|e| match wrapper {
        Wrapper::None => ArchiveError::io(label, e),
        wrapper => ArchiveError::NotTar {
            path: label.to_owned(),
            detail: format!(": it is {0}-compressed, but the {0} data is damaged ({e})", wrapper.name()),
        },
    })?;
    head.truncate(n);
    let not_tar = |error| sniff::refine(error, &head, wrapper);
    let mut archive = tar::Archive::new(Cursor::new(head.clone()).chain(tar));
    let entries = archive.entries().map_err(|e| ArchiveError::io(label, e))?;
    let mut members =
        StreamMembers { label, index: TarIndex::default(), kept: HashMap::new(), compressions: HashMap::new() };
    let mut kept_total = 0u64;
    for (position, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| not_tar(entry_error(label, position, &e)))?;
        let Some((name, described)) = describe(&entry, label, position)? else { continue };
        let cut = |e: &io::Error| ArchiveError::BadEntry {
            path: label.to_owned(),
            entry: name.clone(),
            reason: if e.kind() == io::ErrorKind::UnexpectedEof {
                "the archive ends inside it (it was cut short)".into()
            } else {
                e.to_string()
            },
        };
        if described.kind == EntryKind::File {
            let mut entry = Counted { inner: &mut entry, count: 0 };
            let mut peek = vec![0u8; described.size.min(512) as usize];
            let n = read_up_to(&mut entry, &mut peek).map_err(|e| cut(&e))?;
            peek.truncate(n);
            let mut visited = Ok(());
            match classify(&name, &peek, described.size) {
                Kind::Blob(compression) => {
                    members.compressions.insert(name.clone(), compression);
                    let blob = StreamedBlob { name: &name, size: described.size, compression };
                    visited = visitor.blob(&blob, &mut Cursor::new(peek).chain(&mut entry));
                }
                Kind::Json => {
                    kept_total += described.size;
                    if kept_total > MAX_KEPT_JSON {
                        return Err(ArchiveError::BadEntry {
                            path: label.to_owned(),
                            entry: name,
                            reason: format!("the archive's JSON members together exceed {MAX_KEPT_JSON} bytes"),
                        });
                    }
                    let mut bytes = peek;
                    entry.read_to_end(&mut bytes).map_err(|e| cut(&e))?;
                    if let Some(previous) = members.kept.insert(name.clone(), bytes) {
                        kept_total -= previous.len() as u64;
                    }
                }
                Kind::Other => {}
            }
            // Skip the rest here rather than in tar, so a cut names this entry.
            io::copy(&mut entry, &mut io::sink()).map_err(|e| cut(&e))?;
            if entry.count < described.size {
                return Err(cut(&io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            if let Err(source) = visited {
                return Err(ArchiveError::Visitor { path: label.to_owned(), entry: name, source });
            }
        }
        members.index.insert(name, described, label)?;
    }
    // Read on past the end-of-archive blocks to the end of the input: a
    // wrapper's checksum (gzip's CRC-32, zstd's) is checked only there, and a
    // writer still sending padding is not cut off with a broken pipe.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|source| ArchiveError::Trailer { path: label.to_owned(), source })?;
    members.index = std::mem::take(&mut members.index).finish(label).map_err(not_tar)?;
    Ok(members)
}

pub(crate) fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_are_told_by_magic_bytes() {
        assert_eq!(Wrapper::sniff(&[0x1f, 0x8b, 8, 0]), Wrapper::Gzip);
        assert_eq!(Wrapper::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Wrapper::Zstd);
        assert_eq!(Wrapper::sniff(b"\xfd7zXZ\x00"), Wrapper::Xz);
        assert_eq!(Wrapper::sniff(b"manifest.json"), Wrapper::None);
    }

    #[test]
    fn a_tar_header_is_recognised_by_its_checksum() {
        let mut header = tar::Header::new_ustar();
        header.set_path("a").unwrap();
        header.set_size(0);
        header.set_cksum();
        assert!(tar_checksum_ok(header.as_bytes()));
        let mut broken = *header.as_bytes();
        broken[0] ^= 1;
        assert!(!tar_checksum_ok(&broken));
    }
}
