//! `hoist push` to a real registry, checked with skopeo.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::{TestRegistry, tools};

use crate::support::{assert_manifest_digest, copy_and_check, hoist_run, path_str, pushed_digest};

fn two_layer_image() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1.0")
        .layer(layer_tar(&[("etc/os-release", b"ID=hoist\n"), ("bin/tool", &vec![7u8; 300_000])]))
        .layer(incompressible_layer(1, 2 * 1024 * 1024 + 17))
}

/// Checks with skopeo that `reference` is the image `fixture`, pushed with
/// Docker media types and gzip layers, under the digest hoist printed.
fn assert_pushed(reference: &str, digest: &str, fixture: &ImageFixture) {
    let inspect = tools::skopeo_inspect(reference);
    assert_eq!(inspect["Digest"], digest, "skopeo sees the digest hoist printed");
    assert_manifest_digest(reference, digest);
    let image = copy_and_check(reference, fixture);
    assert_eq!(image.manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(image.manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert!(
        image.layer_types().iter().all(|t| *t == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{:?}",
        image.layer_types()
    );
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
    let digest = pushed_digest(&run.stdout, &dest);
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
    let digest = pushed_digest(&run.stdout, &first);
    assert_eq!(pushed_digest(&run.stdout, &second), digest, "both tags name one manifest");
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
        pushed_digest(&first.success().stdout, &dest),
        pushed_digest(&second.success().stdout, &dest),
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
    assert_pushed(&dest, pushed_digest(&run.success().stdout, &dest), &second);
    let by_number = hoist_run(&["push", path_str(&archive), &dest, "--image", "2"]);
    assert_eq!(pushed_digest(&by_number.success().stdout, &dest), pushed_digest(&run.stdout, &dest));
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
    assert_pushed(&one, pushed_digest(&run.stdout, &one), &first);
    assert_pushed(&two, pushed_digest(&run.stdout, &two), &second);
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
