//! Arbitrary bytes as `manifest.json` next to a valid config and layer
//! (and a symlink to it): reading must end in an error or images, never a
//! panic.
#![no_main]

mod common;

use hoist_archive::{SkipBlobs, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layer = common::layer();
    let config = common::config(&format!("sha256:{}", common::sha256_hex(&layer)));
    // Not named by its digest, so a seed can name it.
    let config_name = "config.json";
    let archive = common::archive(
        &[("abc/layer.tar", &layer), (config_name, &config), ("manifest.json", data)],
        &[("def/layer.tar", "../abc/layer.tar"), ("loop/a", "b"), ("loop/b", "a")],
    );
    let _ = read_stream(&archive[..], "fuzz.tar", &mut SkipBlobs);
});
