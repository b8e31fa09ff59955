//! Arbitrary bytes as an archive: the header index (seekable path) and the
//! streaming pass must return an error or a result, never panic or hang.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use hoist_archive::{SkipBlobs, TarIndex, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.tar");
    if let Ok(index) = TarIndex::build(Cursor::new(data), path, data.len() as u64) {
        for name in ["manifest.json", "index.json", "oci-layout", "a/layer.tar", "blobs/sha256/x"] {
            let _ = index.resolve(name, path);
        }
    }
    let _ = read_stream(data, path, &mut SkipBlobs);
});
