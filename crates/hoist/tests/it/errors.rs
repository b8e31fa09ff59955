//! Bad input: a one-line `error:`, a `hint:`, a documented exit code, no panic.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, TarWriter, gzip, layer_tar};

use crate::support::{hoist_run, path_str};

const BAD_ARCHIVE: i32 = 3;
const USAGE: i32 = 2;
const UNAVAILABLE: i32 = 6;

fn valid_archive(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ok.tar");
    DockerSaveClassic::new().image(ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")]))).write_to(&path);
    path
}

#[test]
fn a_missing_file_is_named() {
    let run = hoist_run(&["push", "/nonexistent/app.tar", "127.0.0.1:1/app:1"]);
    run.fails_with(BAD_ARCHIVE, "/nonexistent/app.tar");
}

#[test]
fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.tar");
    std::fs::write(&path, b"").unwrap();
    hoist_run(&["push", path_str(&path), "127.0.0.1:1/app:1"]).fails_with(BAD_ARCHIVE, "is empty");
}

#[test]
fn a_file_that_is_not_a_tar_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    std::fs::write(&path, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    hoist_run(&["push", path_str(&path), "127.0.0.1:1/app:1"]).fails_with(BAD_ARCHIVE, "is not a tar archive");
}

/// What the file looks like, in words, instead of the tar reader's message
/// quoting header bytes; from a file and from standard input alike.
#[test]
fn a_file_that_is_not_a_tar_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("build.sh", b"#!/bin/sh\ndocker save app > app.tar\n".to_vec(), "it looks like a script (`#!/bin/sh`)"),
        ("page.tar", b"<!DOCTYPE html>\n<html><body>Not Found".to_vec(), "it looks like HTML or XML"),
        ("notes.tar", b"these are not the bytes you want\n".to_vec(), "it is text, starting `these are not"),
        ("manifest.tar", br#"[{"Config":"c.json","RepoTags":["app:1"],"Layers":[]}]"#.to_vec(), "it is JSON"),
        (
            "app.tar.gz",
            gzip(b"#!/usr/bin/env python3\nprint('hi')\n"),
            "it is gzip-compressed, and its content looks like a script (`#!/usr/bin/env python3`)",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let run = hoist_run(&["inspect", path_str(&path)]);
        run.fails_with(BAD_ARCHIVE, &format!("`{}` is not a tar archive: {expected}", path.display()));
        let piped = crate::support::hoist_stdin(&["inspect", "-"], bytes, None);
        piped.fails_with(BAD_ARCHIVE, &format!("`-` is not a tar archive: {expected}"));
        assert!(!run.stderr.contains("numeric field") && !run.stderr.contains("cksum"), "{}", run.stderr);
    }
}

#[test]
fn a_tar_without_manifest_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.tar");
    let mut tar = TarWriter::new();
    tar.file("hello.txt", b"hello");
    std::fs::write(&path, tar.finish()).unwrap();
    let run = hoist_run(&["push", path_str(&path), "127.0.0.1:1/app:1"]);
    run.fails_with(BAD_ARCHIVE, "no `manifest.json`");
    assert!(run.stderr.contains("plain.tar"), "names the archive: {}", run.stderr);
}

#[test]
fn a_malformed_destination_is_refused_before_reading_anything() {
    for bad in ["127.0.0.1:5000/App:1", "127.0.0.1:5000/app:", "host:notaport/app", "127.0.0.1:5000//app"] {
        hoist_run(&["push", "/nonexistent.tar", bad]).fails_with(USAGE, "invalid image reference");
    }
}

#[test]
fn an_unreachable_registry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let archive = valid_archive(dir.path());
    // Nothing listens on port 1 of loopback.
    let run = hoist_run(&["push", path_str(&archive), "127.0.0.1:1/app:1"]);
    run.fails_with(UNAVAILABLE, "127.0.0.1:1");
    assert!(run.stderr.contains("Connection refused") || run.stderr.contains("connection refused"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: check that a registry is running at 127.0.0.1:1"), "{}", run.stderr);
}

#[test]
fn an_archive_image_without_tags_needs_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("untagged.tar");
    DockerSaveClassic::new().image(ImageFixture::new().layer(layer_tar(&[("a", b"a")]))).write_to(&path);
    hoist_run(&["push", path_str(&path)]).fails_with(USAGE, "has no RepoTags");
}

#[test]
fn unknown_flags_are_usage_errors() {
    let run = hoist_run(&["push", "--no-such-flag"]);
    assert_eq!(run.code, USAGE, "{}", run.stderr);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
}
