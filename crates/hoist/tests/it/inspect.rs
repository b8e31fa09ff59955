//! `hoist inspect` on fixture archives.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, layer_tar};

use crate::support::{hoist_run, path_str};

#[test]
fn json_lists_images_layers_and_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.tar");
    let fixture = ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")])).layer(layer_tar(&[("b", b"b")]));
    DockerSaveClassic::new().image(fixture.clone()).write_to(&path);
    let run = hoist_run(&["inspect", "--json", path_str(&path)]);
    run.success();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["format"], "docker-save-classic");
    let image = &value["images"][0];
    assert_eq!(image["tags"][0], "app:1");
    assert_eq!(image["config"], fixture.config_digest());
    assert_eq!(image["platform"], "linux/amd64");
    let diff_ids: Vec<_> =
        image["layers"].as_array().unwrap().iter().map(|l| l["diff_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(diff_ids, fixture.diff_ids());
    assert_eq!(image["layers"][0]["compression"], "none");
    assert_eq!(image["layers"][0]["size"], fixture.layers[0].len());
}

#[test]
fn the_table_shows_tags_platform_config_and_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.tar");
    let fixture = ImageFixture::new().tag("app:1").tag("app:latest").layer(layer_tar(&[("a", b"a")]));
    DockerSaveClassic::new().image(fixture.clone()).image(ImageFixture::new()).write_to(&path);
    let run = hoist_run(&["inspect", "--verify", path_str(&path)]);
    run.success();
    let out = &run.stdout;
    assert!(out.starts_with("format: docker-save-classic\n"), "{out}");
    assert!(out.contains("image 1: app:1, app:latest"), "{out}");
    assert!(out.contains("image 2: <untagged>"), "{out}");
    assert!(out.contains("platform: linux/amd64"), "{out}");
    assert!(out.contains(&format!("config:   {}", fixture.config_digest())), "{out}");
    let row = out.lines().find(|l| l.contains(&fixture.diff_ids()[0])).expect("a row for the layer");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["1", fixture.diff_ids()[0].as_str(), &fixture.layers[0].len().to_string(), "none"]);
    assert!(out.contains("verified: every layer (1) matches its diff_id"), "{out}");
}

#[test]
fn json_says_verified_only_with_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.tar");
    DockerSaveClassic::new().image(ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")]))).write_to(&path);
    let plain = hoist_run(&["inspect", "--json", path_str(&path)]);
    let plain: serde_json::Value = serde_json::from_str(&plain.success().stdout).unwrap();
    assert!(plain.get("verified").is_none(), "{plain}");
    let verified = hoist_run(&["inspect", "--json", "--verify", path_str(&path)]);
    let verified: serde_json::Value = serde_json::from_str(&verified.success().stdout).unwrap();
    assert_eq!(verified["verified"], true);
}
