//! A small valid image to surround the fuzzed JSON member with, so the
//! fuzzer can reach past parsing into link resolution and validation.

/// An uncompressed layer: an empty tar (two zero blocks), so its digest is
/// well known and seeds can name it.
pub fn layer() -> Vec<u8> {
    vec![0; 1024]
}

/// A config whose single diff_id is `diff_id`.
pub fn config(diff_id: &str) -> Vec<u8> {
    format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#)
        .into_bytes()
}

/// A tar of `(name, bytes)` entries, plus `(name, target)` symlinks.
pub fn archive(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    for (name, target) in links {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hoist_archive::LayerHashes::compute(bytes, hoist_archive::Compression::None).unwrap().stored.hex().to_owned()
}
