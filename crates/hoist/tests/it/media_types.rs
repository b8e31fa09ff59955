//! Item 20 of the registry checklist: one push never mixes Docker and OCI
//! media types. The manifest hoist writes, its config and every layer
//! descriptor belong to the family `--format` names, whatever family the
//! archive itself used; skopeo reads the manifest back from the registry.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, LayerCompression, OciArchive, layer_tar};
use hoist_testkit::{TestRegistry, tools};
use serde_json::Value;

use crate::support::{hoist_run, path_str};

fn image() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1")
        .layer(layer_tar(&[("etc/app.conf", b"port=80\n")]))
        .layer(layer_tar(&[("bin/app", b"#!/bin/sh\necho app\n")]))
}

/// Pushes `archive` to `reference` with `extra` flags; returns the manifest the registry serves.
fn push(archive: &[u8], reference: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.tar");
    std::fs::write(&path, archive).unwrap();
    let mut args = vec!["push", "--no-cache", path_str(&path), reference];
    args.extend_from_slice(extra);
    hoist_run(&args).success();
    let copy = tempfile::tempdir().unwrap();
    tools::skopeo_copy_to_dir(reference, copy.path());
    serde_json::from_slice(&tools::skopeo_raw_manifest(reference)).unwrap()
}

fn media_types(manifest: &Value) -> Vec<String> {
    let mut types = vec![manifest["mediaType"].as_str().unwrap().to_owned()];
    types.push(manifest["config"]["mediaType"].as_str().unwrap().to_owned());
    for layer in manifest["layers"].as_array().unwrap() {
        types.push(layer["mediaType"].as_str().unwrap().to_owned());
    }
    types
}

#[test]
fn an_oci_archive_pushed_as_docker_has_only_docker_media_types() {
    let registry = TestRegistry::start();
    let archive = OciArchive::new().image(image()).compression(LayerCompression::Gzip).build();
    let manifest = push(&archive, &format!("{}/families/docker:1", registry.host()), &[]);
    let types = media_types(&manifest);
    assert_eq!(types.len(), 4);
    assert!(types.iter().all(|t| t.starts_with("application/vnd.docker.")), "{types:?}");
}

#[test]
fn a_docker_archive_pushed_as_oci_has_only_oci_media_types() {
    let registry = TestRegistry::start();
    let archive = DockerSaveClassic::new().image(image()).build();
    for (tag, compression) in [("gzip", "gzip"), ("zstd", "zstd")] {
        let reference = format!("{}/families/oci:{tag}", registry.host());
        let manifest = push(&archive, &reference, &["--format", "oci", "--compression", compression]);
        let types = media_types(&manifest);
        assert!(types.iter().all(|t| t.starts_with("application/vnd.oci.")), "{types:?}");
        assert!(types[2..].iter().all(|t| t.ends_with(compression)), "{types:?}");
    }
}

/// An archive that stores zstd layers, pushed as Docker: a Docker manifest
/// cannot name a zstd layer, so those layers are re-encoded with
/// `--compression` (gzip) instead of going up as they are; with
/// `--format oci` they keep their bytes.
#[test]
fn zstd_layers_pushed_as_docker_are_reencoded_and_kept_as_oci() {
    let registry = TestRegistry::start();
    let archive = OciArchive::new().image(image()).compression(LayerCompression::Zstd).build();
    let as_docker = push(&archive, &format!("{}/families/zstd:1", registry.host()), &[]);
    let types = media_types(&as_docker);
    assert!(types.iter().all(|t| t.starts_with("application/vnd.docker.")), "{types:?}");
    assert!(types[2..].iter().all(|t| t.ends_with("tar.gzip")), "{types:?}");
    let as_oci = push(&archive, &format!("{}/families/zstd:2", registry.host()), &["--format", "oci"]);
    let types = media_types(&as_oci);
    assert!(types[2..].iter().all(|t| t.ends_with("+zstd")), "{types:?}");
    let stored: Vec<_> = as_oci["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect();
    let reencoded: Vec<_> = as_docker["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect();
    assert!(stored.iter().all(|d| !reencoded.contains(d)), "the Docker push made new blobs");
}
