//! `--compression`, `--format` and `--recompress` against the real registry:
//! every pushed image is copied out by skopeo (which verifies each digest),
//! its media types are read from the manifest the registry serves, and each
//! layer is decoded as its media type says and hashed against its diff_id.
//!
//! No Docker Engine round trip with zstd: the engine here (20.10) cannot
//! pull zstd layers ("archive/tar: invalid tar header"); the default gzip
//! layers are pulled and run in `docker.rs`.

use std::path::{Path, PathBuf};

use hoist_testkit::fixtures::{
    DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, gzip, incompressible_layer, layer_tar,
};
use hoist_testkit::{TestRegistry, tools};

use crate::support::{copy_and_check, hoist_run, path_str};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A small layer, a compressible one spanning several gzip blocks (so the
/// block-parallel compressor and the level matter), and an incompressible one.
fn image() -> ImageFixture {
    let text: Vec<u8> =
        (0..3_000_000u32).map(|i| b"hoist layer text "[(i % 17) as usize] ^ u8::from(i % 4099 == 0)).collect();
    ImageFixture::new()
        .tag("app:1")
        .layer(layer_tar(&[("etc/os-release", b"ID=hoist\n")]))
        .layer(layer_tar(&[("usr/share/doc/words", &text)]))
        .layer(incompressible_layer(11, 400_000))
}

fn classic(dir: &Path, fixture: &ImageFixture) -> PathBuf {
    let path = dir.join("classic.tar");
    DockerSaveClassic::new().image(fixture.clone()).write_to(&path);
    path
}

/// Pushes `archive` to `dest` with `extra` flags and returns the manifest
/// digest and each layer's `compression` in the `--output json` summary.
fn push_reporting(archive: &Path, dest: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["push", "-q", "--no-cache", "--output", "json"];
    args.extend_from_slice(extra);
    args.extend([path_str(archive), dest]);
    let run = hoist_run(&args);
    let summary: serde_json::Value = serde_json::from_str(&run.success().stdout).unwrap();
    let image = &summary["images"][0];
    let blobs = image["blobs"].as_array().unwrap();
    assert_eq!(blobs[0]["compression"], "stored", "the config goes up as it is");
    let layers = blobs[1..].iter().map(|b| b["compression"].as_str().unwrap().to_owned()).collect();
    (image["digest"].as_str().unwrap().to_owned(), layers)
}

/// [`push_reporting`], checking every layer reports `compression`.
fn push_as(archive: &Path, dest: &str, extra: &[&str], compression: &str) -> String {
    let (digest, layers) = push_reporting(archive, dest, extra);
    assert!(layers.iter().all(|c| c == compression), "{extra:?}: {layers:?}, expected {compression}");
    digest
}

fn push(archive: &Path, dest: &str, extra: &[&str]) -> String {
    push_reporting(archive, dest, extra).0
}

/// Copies `reference` out with skopeo and checks the manifest's media type,
/// every layer's media type and that each layer decodes to its diff_id.
/// Returns the layer digests.
fn assert_image(reference: &str, fixture: &ImageFixture, manifest_type: &str, layer_type: &str) -> Vec<String> {
    let image = copy_and_check(reference, fixture);
    assert_eq!(image.manifest["mediaType"], manifest_type, "{reference}");
    assert!(image.layer_types().iter().all(|t| *t == layer_type), "{reference}: {:?}", image.layer_types());
    image.layer_digests()
}

#[test]
fn zstd_with_oci_format_pushes_zstd_layers() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let archive = classic(dir.path(), &fixture);
    let dest = format!("{}/app:zstd", registry.host());
    push_as(&archive, &dest, &["--compression", "zstd", "--format", "oci"], "zstd:3");
    assert_image(&dest, &fixture, OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd");
    let level = format!("{}/app:zstd19", registry.host());
    push_as(&archive, &level, &["--compression", "zstd:19", "--format", "oci"], "zstd:19");
    assert_image(&level, &fixture, OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn zstd_with_the_docker_format_is_a_usage_error() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = classic(dir.path(), &image());
    let dest = format!("{}/app:1", registry.host());
    let run = hoist_run(&["push", "--compression", "zstd", path_str(&archive), &dest]);
    run.fails_with(2, "zstd");
    assert!(run.stderr.contains("--format oci"), "the hint names the fix: {}", run.stderr);
    let explicit = hoist_run(&["push", "--compression", "zstd:3", "--format", "docker", path_str(&archive), &dest]);
    explicit.fails_with(2, "zstd");
    let tags = tools::run(std::process::Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/app", registry.host()),
    ]));
    assert!(!tags.status.success(), "nothing was pushed: {}", String::from_utf8_lossy(&tags.stdout));
}

#[test]
fn none_pushes_plain_tar_layers_in_both_formats() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let archive = classic(dir.path(), &fixture);
    let docker = format!("{}/app:docker", registry.host());
    push_as(&archive, &docker, &["--compression", "none"], "none");
    let digests = assert_image(&docker, &fixture, DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.diff.tar");
    let oci = format!("{}/app:oci", registry.host());
    push(&archive, &oci, &["--compression", "none", "--format", "oci"]);
    assert_eq!(assert_image(&oci, &fixture, OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar"), digests);
    // An uncompressed layer's digest is its diff_id.
    assert_eq!(digests, fixture.diff_ids());
}

#[test]
fn gzip_levels_give_different_valid_blobs() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let archive = classic(dir.path(), &fixture);
    let mut layer_digests = Vec::new();
    for level in ["gzip:1", "gzip:6"] {
        let dest = format!("{}/app:{}", registry.host(), level.replace(':', "-"));
        push_as(&archive, &dest, &["--compression", level], level);
        layer_digests.push(assert_image(
            &dest,
            &fixture,
            DOCKER_MANIFEST,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ));
    }
    assert_ne!(layer_digests[0][1], layer_digests[1][1], "the compressible layer depends on the level");
}

#[test]
fn compression_is_deterministic_across_registries_and_job_counts() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let archive = classic(dir.path(), &fixture);
    for flags in
        [&["--compression", "gzip"][..], &["--compression", "gzip:6"], &["--compression", "zstd", "--format", "oci"]]
    {
        let (one, four) = (TestRegistry::start(), TestRegistry::start());
        let dest_one = format!("{}/app:1", one.host());
        let dest_four = format!("{}/app:1", four.host());
        let first = push(&archive, &dest_one, &[flags, &["--jobs", "1"]].concat());
        let second = push(&archive, &dest_four, &[flags, &["--jobs", "4"]].concat());
        assert_eq!(first, second, "{flags:?}: the same archive gives the same manifest");
        assert_eq!(tools::skopeo_inspect(&dest_four)["Digest"], first.as_str());
    }
}

#[test]
fn compressed_layers_keep_their_digests_unless_recompressed() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let archive = dir.path().join("docker25.tar");
    DockerSaveOci::new().image(fixture.clone()).compression(LayerCompression::Gzip).write_to(&archive);
    let stored: Vec<String> = fixture.layers.iter().map(|tar| hoist_testkit::sha256(&gzip(tar))).collect();

    let kept = format!("{}/app:kept", registry.host());
    push_as(&archive, &kept, &[], "stored");
    let gzip_type = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    assert_eq!(assert_image(&kept, &fixture, DOCKER_MANIFEST, gzip_type), stored, "sent as stored");
    // Asking for another codec alone changes nothing: only uncompressed layers are encoded.
    let oci = format!("{}/app:kept-oci", registry.host());
    push_as(&archive, &oci, &["--compression", "zstd", "--format", "oci"], "stored");
    assert_eq!(assert_image(&oci, &fixture, OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+gzip"), stored);

    let recompressed = format!("{}/app:zstd", registry.host());
    push_as(&archive, &recompressed, &["--recompress", "--compression", "zstd", "--format", "oci"], "zstd:3");
    let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    let digests = assert_image(&recompressed, &fixture, OCI_MANIFEST, zstd_type);
    for (new, old) in digests.iter().zip(&stored) {
        assert_ne!(new, old, "re-encoded layers are new blobs");
    }
}
