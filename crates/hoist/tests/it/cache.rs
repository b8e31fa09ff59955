//! The blob cache: a repeat push compresses nothing and costs a HEAD per layer.

use hoist_testkit::TestRegistry;
use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};

use crate::support::{hoist_run, path_str};

fn actions(stdout: &str) -> Vec<String> {
    let summary: serde_json::Value = serde_json::from_str(stdout).unwrap();
    summary["images"][0]["blobs"].as_array().unwrap().iter().map(|b| b["action"].as_str().unwrap().to_owned()).collect()
}

fn archive(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("app.tar");
    let image =
        ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")])).layer(incompressible_layer(3, 1024 * 1024));
    DockerSaveClassic::new().image(image).write_to(&path);
    path
}

#[test]
fn a_repeat_push_finds_every_layer_through_the_cache() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = archive(dir.path());
    let cache = dir.path().join("cache");
    let dest = format!("{}/app:1", registry.host());
    let push = |extra: &[&str]| {
        let mut args = vec!["push", "--output", "json", "-q", "--cache-dir", path_str(&cache), path_str(&path), &dest];
        args.extend_from_slice(extra);
        hoist_run(&args)
    };
    let first = push(&[]);
    assert_eq!(actions(&first.success().stdout), ["uploaded", "uploaded", "uploaded"]);
    assert!(cache.join("blobs.json").is_file(), "the cache is written");

    let second = push(&[]);
    assert_eq!(actions(&second.success().stdout), ["existed", "existed", "existed"], "no layer is compressed again");
    let digest =
        |stdout: &str| serde_json::from_str::<serde_json::Value>(stdout).unwrap()["images"][0]["digest"].clone();
    assert_eq!(digest(&first.stdout), digest(&second.stdout));

    // A registry that lost the blobs: the cache is only a hint, HEAD decides.
    let fresh = TestRegistry::start();
    let dest = format!("{}/app:1", fresh.host());
    let args = ["push", "--output", "json", "-q", "--cache-dir", path_str(&cache), path_str(&path), &dest];
    assert_eq!(actions(&hoist_run(&args).success().stdout), ["uploaded", "uploaded", "uploaded"]);
}

#[test]
fn no_cache_and_a_corrupt_cache_still_push() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = archive(dir.path());
    let cache = dir.path().join("cache");
    let dest = format!("{}/app:1", registry.host());
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("blobs.json"), b"\x00garbage").unwrap();
    let run = hoist_run(&["push", "--cache-dir", path_str(&cache), "--progress", "none", path_str(&path), &dest]);
    run.success();
    assert!(
        run.stderr.contains("warning: ignoring the blob cache") && run.stderr.contains("corrupt"),
        "{}",
        run.stderr
    );
    // A new tag teaches nothing, so only the cache could skip compression: --no-cache reads none.
    let other = format!("{}/app:other", registry.host());
    let again = hoist_run(&["push", "--output", "json", "-q", "--no-cache", path_str(&path), &other]);
    assert_eq!(actions(&again.success().stdout)[1..], ["uploaded", "uploaded"], "--no-cache reads nothing");
}

#[test]
fn with_an_empty_cache_layers_are_learned_from_the_destination_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = archive(dir.path());
    let dest = format!("{}/app:1", registry.host());
    let first = hoist_run(&["push", "--output", "json", "-q", "--no-cache", path_str(&path), &dest]);
    assert_eq!(actions(&first.success().stdout), ["uploaded", "uploaded", "uploaded"]);
    // A fresh machine: no cache, but the tag is there already.
    let again = hoist_run(&["push", "--output", "json", "-q", "--no-cache", path_str(&path), &dest]);
    assert_eq!(actions(&again.success().stdout), ["existed", "existed", "existed"], "nothing is compressed again");
    // Another tag of the same repository learns nothing (it does not exist yet) and uploads.
    let other = format!("{}/app:2", registry.host());
    let fresh = hoist_run(&["push", "--output", "json", "-q", "--no-cache", path_str(&path), &other]);
    assert_eq!(actions(&fresh.success().stdout)[0], "existed", "the config is found by HEAD");
}

/// Another process holding the cache lock delays the save by a bounded,
/// announced wait, and never the push's result.
#[test]
fn a_held_cache_lock_is_announced_and_waited_for_a_bounded_time() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = archive(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let lock = std::fs::File::create(cache.join("blobs.lock")).unwrap();
    lock.lock().unwrap();
    let started = std::time::Instant::now();
    let dest = format!("{}/app:1", registry.host());
    let run = hoist_run(&["push", "--progress", "plain", "--cache-dir", path_str(&cache), path_str(&path), &dest]);
    run.success();
    assert!(run.stderr.contains("warning: waiting for the blob cache lock"), "{}", run.stderr);
    assert!(run.stderr.contains("warning: could not save the blob cache"), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "bounded: {:?}", started.elapsed());
    drop(lock);
}
