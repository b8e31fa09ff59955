//! The streaming API as the push pipeline uses it: every layer is handed to
//! the visitor by the entry name the images later use, before the images are
//! known.

use std::collections::HashMap;
use std::io::Read;

use hoist_archive::{Compression, HashingVisitor, LayerVisitor, StreamedBlob, Wrapper, read_stream};
use hoist_testkit::fixtures::{
    DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, layer_tar, zstd, zstd_long,
};

#[derive(Default)]
struct Recorder {
    seen: Vec<(String, u64, Compression, usize)>,
}

impl LayerVisitor for Recorder {
    fn blob(
        &mut self,
        blob: &StreamedBlob<'_>,
        bytes: &mut dyn Read,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Read only part: the pass must skip the rest itself.
        let mut head = [0u8; 10];
        let n = bytes.read(&mut head)?;
        self.seen.push((blob.name.to_owned(), blob.size, blob.compression, n));
        Ok(())
    }
}

fn image() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1")
        .layer(layer_tar(&[("a", b"first")]))
        .layer(layer_tar(&[("b", b"second")]))
        .layer(layer_tar(&[("a", b"first")]))
}

#[test]
fn classic_layers_are_visited_before_manifest_json_and_matched_by_name() {
    let archive = DockerSaveClassic::new().image(image()).build();
    let mut recorder = Recorder::default();
    let streamed = read_stream(&archive[..], "-", &mut recorder).unwrap();
    assert_eq!(streamed.wrapper(), Wrapper::None);
    let visited: HashMap<&str, u64> = recorder.seen.iter().map(|(n, s, _, _)| (n.as_str(), *s)).collect();
    // The repeated layer is a symlink: visited once, and both uses name it.
    assert_eq!(recorder.seen.len(), 2, "{:?}", recorder.seen);
    let layers = &streamed.images()[0].layers;
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[0].entry, layers[2].entry);
    for layer in layers {
        assert_eq!(visited.get(layer.entry.as_str()), Some(&layer.size), "{}", layer.entry);
    }
}

#[test]
fn hashes_taken_on_the_fly_verify_compressed_layers_of_a_wrapped_archive() {
    let fixture = image();
    let archive = zstd(&DockerSaveOci::new().image(fixture.clone()).compression(LayerCompression::Gzip).build());
    let mut hashing = HashingVisitor::default();
    let streamed = read_stream(&archive[..], "app.tar.zst", &mut hashing).unwrap();
    assert_eq!(streamed.wrapper(), Wrapper::Zstd);
    streamed.verify(&hashing.hashes).unwrap();
    let image = &streamed.images()[0];
    for (layer, diff_id) in image.layers.iter().zip(fixture.diff_ids()) {
        assert_eq!(layer.compression, Compression::Gzip);
        let hashes = &hashing.hashes[&layer.entry];
        assert_eq!(hashes.diff_id.to_string(), diff_id);
        assert_eq!(Some(&hashes.stored), layer.digest.as_ref());
    }
}

#[test]
fn a_visitor_error_is_returned_with_the_entry_name() {
    struct Refuse;
    impl LayerVisitor for Refuse {
        fn blob(
            &mut self,
            _: &StreamedBlob<'_>,
            _: &mut dyn Read,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err("upload refused".into())
        }
    }
    let archive = DockerSaveClassic::new().image(image()).build();
    let error = read_stream(&archive[..], "-", &mut Refuse).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("/layer.tar`: upload refused"), "{message}");
}

/// `zstd --long=31` archives declare a 2 GiB window; `zstd -d --long=31`
/// reads them, and so does hoist.
#[test]
fn a_long_window_zstd_archive_is_read() {
    let archive = zstd_long(&DockerSaveClassic::new().image(image()).build());
    // The frame's window descriptor: exponent 31 - 10 in its top five bits.
    assert_eq!(archive[5] >> 3, 21, "the frame declares a 2 GiB window");
    let mut hashes = HashingVisitor::default();
    let streamed = read_stream(archive.as_slice(), "app.tar.zst", &mut hashes).unwrap();
    assert_eq!(streamed.wrapper(), Wrapper::Zstd);
    streamed.verify(&hashes.hashes).unwrap();
}
