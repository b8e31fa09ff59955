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
