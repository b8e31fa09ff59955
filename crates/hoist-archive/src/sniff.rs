//! What a file that is not a tar archive looks like, for the error that
//! refuses it. The tar reader's own message quotes the raw bytes of a
//! header field, which tells a user nothing; its first bytes usually say
//! what the file is: a script, a web page, a gzip of something else.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use crate::{ArchiveError, Wrapper};

/// How many leading bytes [`refine`] wants: one tar header block.
pub(crate) const HEAD: usize = 512;

/// Rewrites an [`ArchiveError::NotTar`] to say what the input looks like,
/// from its first (decompressed) bytes `head` and what wrapped it. Any other
/// error is returned as it is.
pub(crate) fn refine(error: ArchiveError, head: &[u8], wrapper: Wrapper) -> ArchiveError {
    // A tar whose first header is damaged, or that holds no files: the
    // reader's own words say which.
    if looks_like_tar(head) {
        return error;
    }
    let ArchiveError::NotTar { path, .. } = error else { return error };
    let looks = describe(head);
    let detail = match wrapper {
        Wrapper::None => format!(": {looks}"),
        wrapper => {
            let content = looks.strip_prefix("it ").unwrap_or(&looks);
            format!(": it is {}-compressed, and its content {content}", wrapper.name())
        }
    };
    ArchiveError::NotTar { path, detail }
}

/// [`refine`] for a plain file, whose first block is read again for it.
pub(crate) fn refine_file(error: ArchiveError, file: &mut File) -> ArchiveError {
    if !matches!(error, ArchiveError::NotTar { .. }) {
        return error;
    }
    let mut head = vec![0u8; HEAD];
    match file.seek(SeekFrom::Start(0)).and_then(|_| crate::stream::read_up_to(file, &mut head)) {
        Ok(n) => refine(error, &head[..n], Wrapper::None),
        Err(_) => error,
    }
}

/// A ustar/GNU header (the magic at offset 257), or an old-style header
/// whose checksum holds.
fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= HEAD && (head[257..262] == *b"ustar" || crate::stream::tar_checksum_ok(&head[..HEAD]))
}

/// "it is …" / "it looks like …" for the first bytes of a file.
pub(crate) fn describe(head: &[u8]) -> String {
    if head.is_empty() {
        return "it is empty".into();
    }
    if head.iter().all(|&b| b == 0) {
        return "it holds only zero bytes (a tar archive with no entries, or a file never written)".into();
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        return format!("it looks like a script (`#!{}`)", first_line(&String::from_utf8_lossy(rest)));
    }
    let format = match head {
        [0x1f, 0x8b, ..] => "gzip-compressed (again)",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd-compressed (again)",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz-compressed (again)",
        [b'B', b'Z', b'h', ..] => "bzip2-compressed, which hoist does not read (`bunzip2` it first)",
        [0x7f, b'E', b'L', b'F', ..] => "an ELF executable or library",
        [b'P', b'K', 3 | 5, 4 | 6, ..] => "a zip archive",
        [b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c, ..] => "a 7-Zip archive",
        [b'!', b'<', b'a', b'r', b'c', b'h', b'>', ..] => "an ar archive (a Debian package?)",
        [0xed, 0xab, 0xee, 0xdb, ..] => "an RPM package",
        [b'Q', b'F', b'I', 0xfb, ..] => "a QEMU disk image",
        [b'%', b'P', b'D', b'F', ..] => "a PDF document",
        [0x89, b'P', b'N', b'G', ..] => "a PNG image",
        _ => return describe_text(head),
    };
    format!("it is {format}")
}

fn describe_text(head: &[u8]) -> String {
    // The head may end inside a UTF-8 sequence: what precedes it decides.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        Err(_) => return "its first bytes match no format hoist knows: it is not an image archive".into(),
    };
    if text.chars().any(|c| c.is_control() && !c.is_ascii_whitespace()) {
        return "its first bytes match no format hoist knows: it is not an image archive".into();
    }
    match text.trim_start().chars().next() {
        Some('{' | '[') => {
            "it is JSON: an image archive is a tar that holds `manifest.json`, not a manifest itself".into()
        }
        Some('<') => {
            format!("it looks like HTML or XML (`{}`): a web page saved in its place?", first_line(text.trim_start()))
        }
        _ => format!("it is text, starting `{}`", first_line(text.trim_start())),
    }
}

/// The first line of `text`, at most 40 characters, for quoting.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let mut quoted: String = line.chars().filter(|c| !c.is_control()).take(40).collect();
    if line.chars().count() > 40 {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_mistakes_are_named() {
        assert_eq!(describe(b""), "it is empty");
        assert!(describe(b"#!/bin/sh\nset -e\n").contains("a script (`#!/bin/sh`)"));
        assert!(describe(b"\x7fELF\x02\x01\x01").contains("ELF executable"));
        assert!(describe(b"PK\x03\x04rest").contains("zip archive"));
        assert!(describe(b"  {\"schemaVersion\": 2}").starts_with("it is JSON"));
        assert!(describe(b"<!DOCTYPE html>\n<html>").contains("HTML"));
        assert_eq!(describe(b"hello world\nsecond line"), "it is text, starting `hello world`");
        assert!(describe(&[0u8; 1024]).contains("only zero bytes"));
        assert!(describe(&[0x1f, 0x8b, 8, 0]).contains("gzip-compressed (again)"));
        assert!(describe(&[0xff, 0xfe, 0x00, 0x01, 0x80]).contains("no format hoist knows"));
        // A multi-byte character cut by the end of the head is still text.
        assert!(describe("naïve".as_bytes()[..3].as_ref()).starts_with("it is text"));
    }

    #[test]
    fn a_wrapper_is_named_and_raw_bytes_are_not_quoted() {
        let error = ArchiveError::NotTar { path: "app.tar.gz".into(), detail: " (numeric field \u{1} bad)".into() };
        let mut tar = vec![0u8; HEAD];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(refine(error, &tar, Wrapper::None).to_string().contains("numeric field"), "a tar keeps its detail");
        let error = ArchiveError::NotTar { path: "app.tar.gz".into(), detail: " (numeric field \u{1} bad)".into() };
        let refined = refine(error, b"#!/usr/bin/env python3\n", Wrapper::Gzip).to_string();
        assert_eq!(
            refined,
            "`app.tar.gz` is not a tar archive: it is gzip-compressed, and its content looks like a script \
             (`#!/usr/bin/env python3`)"
        );
        let long = "x".repeat(100);
        assert!(describe(long.as_bytes()).ends_with("…`"));
    }
}
