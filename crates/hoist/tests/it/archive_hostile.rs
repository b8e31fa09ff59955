//! Broken and hostile archives: each gets an `error:` naming the archive and
//! the entry, a `hint:`, exit code 3 (7 for a `--verify` mismatch), and never
//! a panic, whether read from a file or from standard input.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, TarWriter, layer_tar};
use hoist_testkit::sha256_hex;

use crate::archive_layouts::{Input, inspect};

const BAD_ARCHIVE: i32 = 3;
const VERIFICATION: i32 = 7;

/// Both ways in: the seekable index and the streaming pass.
const BOTH: [Input; 2] = [Input::File, Input::Stdin];

fn fails(archive: &[u8], inputs: &[Input], message: &str) {
    for &input in inputs {
        let run = inspect(archive, input, &["--json"]);
        run.fails_with(BAD_ARCHIVE, message);
        let error = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
        let named = if let Input::Stdin = input { "`-`" } else { "archive.tar" };
        assert!(error.contains(named), "{input:?}: the error names the archive: {error}");
    }
}

fn image() -> ImageFixture {
    ImageFixture::new().tag("app:1").layer(layer_tar(&[("payload", b"original content")]))
}

/// A docker-archive with `manifest` as manifest.json, the image's config as
/// `cfg.json` and its layer as `layer.bin`, plus `extra` entries first.
fn with_manifest(manifest: &[u8], extra: impl FnOnce(&mut TarWriter)) -> Vec<u8> {
    let image = image();
    let mut tar = TarWriter::new();
    extra(&mut tar);
    tar.file("layer.bin", &image.layers[0]);
    tar.file("cfg.json", &image.config());
    tar.file("manifest.json", manifest);
    tar.finish()
}

#[test]
fn an_empty_file_is_refused() {
    fails(b"", &BOTH, "is empty");
}

#[test]
fn random_bytes_are_not_a_tar() {
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fails(&bytes, &BOTH, "is not a tar archive");
}

#[test]
fn a_truncated_tar_is_refused() {
    let archive = DockerSaveClassic::new().image(image()).build();
    let layer_at = archive.windows(16).position(|w| w == b"original content").unwrap();
    let cut = &archive[..layer_at + 4];
    inspect(cut, Input::File, &[]).fails_with(BAD_ARCHIVE, "is truncated: entry");
    inspect(cut, Input::Stdin, &[]).fails_with(BAD_ARCHIVE, "ends inside it (it was cut short)");
    // Cut inside a header block.
    let header_cut = &archive[..512 * 3 + 100];
    fails(header_cut, &BOTH, "entry `#3` is not valid: the archive ends inside it (it was cut short)");
}

#[test]
fn a_bad_header_checksum_is_refused() {
    let mut archive = DockerSaveClassic::new().image(image()).build();
    // The first entry is a directory (no body), so the second header is at
    // 512; changing its name leaves its checksum wrong.
    assert!(archive[512].is_ascii_hexdigit(), "the second header starts with a name");
    archive[512] = b'X';
    fails(&archive, &BOTH, "checksum");
}

#[test]
fn manifest_json_that_is_not_json_or_has_the_wrong_shape_is_refused() {
    for manifest in [&b"this is not json"[..], br#"{"Config":"cfg.json"}"#, br#"[{"Layers":["layer.bin"]}]"#] {
        fails(
            &with_manifest(manifest, |_| {}),
            &BOTH,
            "entry `manifest.json` is not valid: it is not a docker save manifest",
        );
    }
}

#[test]
fn paths_escaping_the_archive_in_manifest_json_are_refused() {
    for path in ["../cfg.json", "/etc/passwd", "a/../../cfg.json"] {
        let manifest = format!(r#"[{{"Config":"{path}","RepoTags":["app:1"],"Layers":["layer.bin"]}}]"#);
        fails(&with_manifest(manifest.as_bytes(), |_| {}), &BOTH, "manifest.json names a path outside the archive");
        let manifest = format!(r#"[{{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["{path}"]}}]"#);
        fails(&with_manifest(manifest.as_bytes(), |_| {}), &BOTH, "manifest.json names a path outside the archive");
    }
}

#[test]
fn digests_escaping_blobs_in_index_json_are_refused() {
    for digest in ["sha256:../../etc/passwd", "/etc/passwd", "sha512:../x", "sha256:ABC"] {
        let mut tar = TarWriter::new();
        tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":2}}]}}"#
        );
        tar.file("index.json", index.as_bytes());
        fails(&tar.finish(), &BOTH, "entry `index.json` is not valid: it names the blob");
    }
}

#[test]
fn a_symlink_loop_is_refused() {
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["loop/a.tar"]}]"#;
    let archive = with_manifest(manifest, |tar| {
        tar.symlink("loop/a.tar", "b.tar");
        tar.symlink("loop/b.tar", "a.tar");
    });
    fails(&archive, &BOTH, "its links form a loop");
}

#[test]
fn a_link_to_a_missing_entry_is_refused() {
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["dangling.tar"]}]"#;
    let archive = with_manifest(manifest, |tar| tar.symlink("dangling.tar", "nowhere/layer.tar"));
    fails(&archive, &BOTH, "`nowhere/layer.tar` is referenced but not in the archive");
    let archive = with_manifest(manifest, |tar| tar.hardlink("dangling.tar", "gone.tar"));
    fails(&archive, &BOTH, "`gone.tar` is referenced but not in the archive");
}

#[test]
fn a_missing_config_or_layer_is_refused() {
    let manifest = br#"[{"Config":"other.json","RepoTags":["app:1"],"Layers":["layer.bin"]}]"#;
    fails(&with_manifest(manifest, |_| {}), &BOTH, "`other.json` is referenced but not in the archive");
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["missing.tar"]}]"#;
    fails(&with_manifest(manifest, |_| {}), &BOTH, "`missing.tar` is referenced but not in the archive");
}

#[test]
fn a_sparse_layer_entry_is_refused() {
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["sparse.tar"]}]"#;
    let archive = with_manifest(manifest, |tar| tar.sparse_file("sparse.tar", &image().layers[0]));
    fails(&archive, &BOTH, "entry `sparse.tar` is not valid: it is a sparse entry, not a regular file");
}

#[test]
fn a_huge_json_member_is_refused() {
    let mut manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["layer.bin"]}]"#.to_vec();
    manifest.resize(17 * 1024 * 1024, b' ');
    fails(&with_manifest(&manifest, |_| {}), &BOTH, "JSON members over 16777216 bytes are refused");
}

#[test]
fn a_config_that_does_not_hash_to_its_name_is_refused() {
    let image = image();
    let mut tar = TarWriter::new();
    tar.file("layer.bin", &image.layers[0]);
    let wrong = sha256_hex(b"something else");
    tar.file(&format!("{wrong}.json"), &image.config());
    let manifest = format!(r#"[{{"Config":"{wrong}.json","RepoTags":["app:1"],"Layers":["layer.bin"]}}]"#);
    tar.file("manifest.json", manifest.as_bytes());
    fails(&tar.finish(), &BOTH, "not to the digest in its name");
}

#[test]
fn a_layer_count_that_differs_from_the_diff_ids_is_refused() {
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["layer.bin","layer.bin"]}]"#;
    fails(
        &with_manifest(manifest, |_| {}),
        &BOTH,
        "manifest.json lists 2 layers but the config's rootfs.diff_ids has 1",
    );
}

#[test]
fn duplicate_entry_names_let_the_last_one_win_and_say_so() {
    let first = br#"[{"Config":"cfg.json","RepoTags":["first:1"],"Layers":["layer.bin"]}]"#;
    let second = br#"[{"Config":"cfg.json","RepoTags":["second:1"],"Layers":["layer.bin"]}]"#;
    let archive = with_manifest(second, |tar| tar.file("manifest.json", first));
    for input in BOTH {
        let run = inspect(&archive, input, &["-v"]);
        run.success();
        assert!(run.stdout.contains("second:1") && !run.stdout.contains("first:1"), "{input:?}: {}", run.stdout);
        assert!(run.stderr.contains("duplicate entry name; the later one wins"), "{input:?}: {}", run.stderr);
        assert!(run.stderr.contains("manifest.json"), "{input:?}: {}", run.stderr);
    }
}

#[test]
fn verify_names_the_layer_whose_content_changed() {
    let mut archive = DockerSaveClassic::new().image(image()).build();
    let at = archive.windows(16).position(|w| w == b"original content").unwrap();
    archive[at..at + 16].copy_from_slice(b"tampered content");
    // Without --verify the archive reads fine: only hashing finds it.
    inspect(&archive, Input::File, &[]).success();
    for input in [Input::File, Input::Stdin, Input::Gzip] {
        let run = inspect(&archive, input, &["--verify"]);
        run.fails_with(VERIFICATION, "/layer.tar` does not match: the SHA-256 of its uncompressed content is");
        assert!(run.stderr.contains(&image().diff_ids()[0]), "{input:?}: the expected diff_id: {}", run.stderr);
    }
}

#[test]
fn a_missing_file_or_a_directory_is_named() {
    crate::support::hoist_run(&["inspect", "/nonexistent/app.tar"])
        .fails_with(BAD_ARCHIVE, "cannot read `/nonexistent/app.tar`");
    let dir = tempfile::tempdir().unwrap();
    let run = crate::support::hoist_run(&["inspect", crate::support::path_str(dir.path())]);
    run.fails_with(BAD_ARCHIVE, "cannot read");
}

#[test]
fn verify_checks_a_compressed_layer_after_decompressing_it() {
    use hoist_testkit::fixtures::{gzip, zstd};
    let image = image();
    let mut tampered = image.layers[0].clone();
    let at = tampered.windows(16).position(|w| w == b"original content").unwrap();
    tampered[at..at + 16].copy_from_slice(b"tampered content");
    let archive = |layer: &[u8]| {
        let mut tar = TarWriter::new();
        tar.file("layer.bin", layer);
        tar.file("cfg.json", &image.config());
        tar.file("manifest.json", br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["layer.bin"]}]"#);
        tar.finish()
    };
    for compress in [gzip as fn(&[u8]) -> Vec<u8>, zstd] {
        for input in BOTH {
            inspect(&archive(&compress(&image.layers[0])), input, &["--verify"]).success();
            let run = inspect(&archive(&compress(&tampered)), input, &["--verify"]);
            let expected = format!(
                "entry `layer.bin` does not match: the SHA-256 of its uncompressed content is {}, but the archive says {}",
                hoist_testkit::sha256(&tampered),
                image.diff_ids()[0]
            );
            run.fails_with(VERIFICATION, &expected);
        }
    }
}

/// A gzip blob whose header changed (the OS byte) still decompresses to its
/// diff_id, but is no longer the blob its name and manifest promise.
#[test]
fn verify_checks_stored_blobs_against_their_digests() {
    use hoist_testkit::fixtures::{DockerSaveOci, LayerCompression};
    let image = image();
    let mut archive = DockerSaveOci::new().image(image.clone()).compression(LayerCompression::Gzip).build();
    let blob = LayerCompression::Gzip.apply(&image.layers[0]);
    let at = archive.windows(blob.len()).position(|w| w == blob.as_slice()).unwrap();
    archive[at + 9] ^= 0x01; // the gzip header's OS byte
    for input in BOTH {
        inspect(&archive, input, &[]).success();
        let run = inspect(&archive, input, &["--verify"]);
        let expected = format!(
            "entry `blobs/sha256/{}` does not match: the SHA-256 of its stored bytes is",
            hoist_testkit::sha256_hex(&blob)
        );
        run.fails_with(VERIFICATION, &expected);
    }
}

#[test]
fn an_archive_without_images_is_refused() {
    fails(&with_manifest(b"[]", |_| {}), &BOTH, "holds no images");
    let mut tar = TarWriter::new();
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    tar.file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
    fails(&tar.finish(), &BOTH, "holds no images");
}

#[test]
fn an_empty_index_json_beside_manifest_json_falls_back_to_it() {
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["app:1"],"Layers":["layer.bin"]}]"#;
    let archive = with_manifest(manifest, |tar| tar.file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#));
    for input in BOTH {
        let run = inspect(&archive, input, &["--json", "--verify"]);
        run.success();
        assert!(run.stdout.contains("\"app:1\""), "{}", run.stdout);
    }
}

/// An archive of a million tiny entries would cost hundreds of MiB of index:
/// past `MAX_ENTRIES` it is refused, from a file and from a stream alike,
/// before the index grows further.
#[test]
fn an_archive_with_too_many_entries_is_refused() {
    let mut tar = TarWriter::new();
    for n in 0..=hoist_archive::MAX_ENTRIES {
        tar.file(&format!("junk/{n:07}"), b"");
    }
    let archive = tar.finish();
    fails(&archive, &BOTH, &format!("more than {} entries", hoist_archive::MAX_ENTRIES));
}

/// A base-256 size of 2^80 is not a size (the tar crate reads it as 0).
#[test]
fn a_size_field_past_64_bits_is_refused() {
    let mut header = tar::Header::new_gnu();
    header.set_path("manifest.json").unwrap();
    header.set_size(0);
    header.as_mut_bytes()[124..136].copy_from_slice(&[0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.resize(4096, 0);
    fails(&archive, &BOTH, "does not fit in 64 bits");
}
