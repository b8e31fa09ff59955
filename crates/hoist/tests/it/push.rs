//! `hoist push` to a real registry, checked with skopeo.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::{TestRegistry, sha256, tools};

use crate::support::{hoist_run, path_str};

fn two_layer_image() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1.0")
        .layer(layer_tar(&[("etc/os-release", b"ID=hoist\n"), ("bin/tool", &vec![7u8; 300_000])]))
        .layer(incompressible_layer(1, 2 * 1024 * 1024 + 17))
}

/// The manifest digest on a `REF@sha256:…` stdout line for `reference`.
fn digest_line<'a>(stdout: &'a str, reference: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{reference}@")))
        .unwrap_or_else(|| panic!("no line for {reference} in {stdout}"));
    &line[reference.len() + 1..]
}

/// Checks with skopeo that `reference` is the image `fixture`: skopeo
/// verifies every blob digest while copying, and each layer must gunzip to
/// the fixture's diff_id.
fn assert_pushed(reference: &str, digest: &str, fixture: &ImageFixture) {
    let inspect = tools::skopeo_inspect(reference);
    assert_eq!(inspect["Digest"], digest, "skopeo sees the digest hoist printed");
    let raw = tools::skopeo_raw_manifest(reference);
    assert_eq!(sha256(&raw), digest, "the manifest bytes hash to the printed digest");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert_eq!(manifest["config"]["digest"], fixture.config_digest());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), fixture.layers.len());

    let dir = tempfile::tempdir().unwrap();
    tools::skopeo_copy_to_dir(reference, dir.path());
    for (layer, diff_id) in layers.iter().zip(fixture.diff_ids()) {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let digest = layer["digest"].as_str().unwrap();
        let blob = dir.path().join(digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::metadata(&blob).unwrap().len(), layer["size"].as_u64().unwrap());
        assert_eq!(tools::gunzip_sha256(&blob), diff_id, "layer {digest} decompresses to its diff_id");
    }
    let config = std::fs::read(dir.path().join(fixture.config_digest().trim_start_matches("sha256:"))).unwrap();
    assert_eq!(config, fixture.config(), "the config goes up byte for byte");
}

#[test]
fn pushes_a_classic_archive_to_the_destination() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let fixture = two_layer_image();
    DockerSaveClassic::new().image(fixture.clone()).write_to(&archive);

    let dest = format!("{}/team/app:1.0", registry.host());
    let run = hoist_run(&["push", path_str(&archive), &dest]);
    run.success();
    assert_eq!(run.stdout.lines().count(), 1, "stdout holds only the result: {}", run.stdout);
    let digest = digest_line(&run.stdout, &dest);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert_pushed(&dest, digest, &fixture);
}

#[test]
fn repo_tags_are_used_and_rehomed_by_registry() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let fixture = two_layer_image().tag("app:latest");
    DockerSaveClassic::new().image(fixture.clone()).write_to(&archive);

    let run = hoist_run(&["push", path_str(&archive), "--registry", &format!("{}/team", registry.host())]);
    run.success();
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let first = format!("{}/team/app:1.0", registry.host());
    let second = format!("{}/team/app:latest", registry.host());
    let digest = digest_line(&run.stdout, &first);
    assert_eq!(digest_line(&run.stdout, &second), digest, "both tags name one manifest");
    assert_pushed(&first, digest, &fixture);
    assert_pushed(&second, digest, &fixture);
}

#[test]
fn pushing_twice_gives_the_same_digest() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    DockerSaveClassic::new().image(two_layer_image()).write_to(&archive);
    let dest = format!("{}/app:1.0", registry.host());
    let first = hoist_run(&["push", path_str(&archive), &dest]);
    let second = hoist_run(&["push", "--jobs", "1", path_str(&archive), &dest]);
    assert_eq!(
        digest_line(&first.success().stdout, &dest),
        digest_line(&second.success().stdout, &dest),
        "compression is deterministic"
    );
}

#[test]
fn one_image_of_several_is_chosen_with_image() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("two.tar");
    let shared = layer_tar(&[("shared.txt", b"base layer")]);
    let first = ImageFixture::new().tag("one:1").layer(shared.clone());
    let second = ImageFixture::new().tag("two:1").layer(shared).layer(layer_tar(&[("two.txt", b"second")]));
    DockerSaveClassic::new().image(first).image(second.clone()).write_to(&archive);

    let dest = format!("{}/picked:2", registry.host());
    let refused = hoist_run(&["push", path_str(&archive), &dest]);
    refused.fails_with(2, "holds 2 images");

    let run = hoist_run(&["push", path_str(&archive), &dest, "--image", "two:1"]);
    assert_pushed(&dest, digest_line(&run.success().stdout, &dest), &second);
    let by_number = hoist_run(&["push", path_str(&archive), &dest, "--image", "2"]);
    assert_eq!(digest_line(&by_number.success().stdout, &dest), digest_line(&run.stdout, &dest));
}

#[test]
fn every_image_of_a_multi_image_archive_goes_to_its_tags() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("two.tar");
    let shared = layer_tar(&[("shared.txt", b"base layer")]);
    let first = ImageFixture::new().tag("one:1").layer(shared.clone());
    let second = ImageFixture::new().tag("two:1").layer(shared.clone()).layer(shared);
    DockerSaveClassic::new().image(first.clone()).image(second.clone()).write_to(&archive);

    let run = hoist_run(&["push", path_str(&archive), "--registry", &registry.host()]);
    run.success();
    let one = format!("{}/one:1", registry.host());
    let two = format!("{}/two:1", registry.host());
    assert_pushed(&one, digest_line(&run.stdout, &one), &first);
    assert_pushed(&two, digest_line(&run.stdout, &two), &second);
}

#[test]
fn a_corrupt_layer_moves_no_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("two.tar");
    let good = ImageFixture::new().tag("good:1").layer(layer_tar(&[("good.txt", b"fine")]));
    let bad = ImageFixture::new().tag("bad:1").layer(layer_tar(&[("bad.txt", b"MARKER-to-be-corrupted")]));
    let mut bytes = DockerSaveClassic::new().image(good).image(bad).build();
    let at = bytes.windows(6).position(|w| w == b"MARKER").expect("the marker is in the archive");
    bytes[at] = b'X';
    std::fs::write(&archive, bytes).unwrap();

    let run = hoist_run(&["push", path_str(&archive), "--registry", &registry.host()]);
    run.fails_with(7, "hashes to");
    assert!(run.stderr.contains("two.tar"), "names the archive: {}", run.stderr);
    for name in ["good", "bad"] {
        let (status, _) = registry.get(&format!("/v2/{name}/manifests/1"));
        assert_eq!(status, 404, "no tag moved for {name}");
    }
}
