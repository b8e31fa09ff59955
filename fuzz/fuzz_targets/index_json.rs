//! Arbitrary bytes as `index.json` of an OCI layout holding a valid
//! manifest, config and layer: reading must end in an error or images.
#![no_main]

mod common;

use hoist_archive::{SkipBlobs, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layer = common::layer();
    let layer_hex = common::sha256_hex(&layer);
    let config = common::config(&format!("sha256:{layer_hex}"));
    let config_hex = common::sha256_hex(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_hex = common::sha256_hex(manifest.as_bytes());
    let names = [format!("blobs/sha256/{layer_hex}"), format!("blobs/sha256/{config_hex}"), format!("blobs/sha256/{manifest_hex}")];
    let archive = common::archive(
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            (&names[0], &layer),
            (&names[1], &config),
            (&names[2], manifest.as_bytes()),
            ("index.json", data),
        ],
        &[],
    );
    let _ = read_stream(&archive[..], "fuzz.tar", &mut SkipBlobs);
});
