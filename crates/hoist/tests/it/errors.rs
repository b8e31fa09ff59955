//! Bad input: a one-line `error:`, a `hint:`, a documented exit code, no panic.

use hoist_testkit::TestRegistry;
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

/// A destination that answers: a push checks the registry before the
/// archive, so archive errors need a registry that is there.
fn reachable() -> (TestRegistry, String) {
    let registry = TestRegistry::start();
    let dest = format!("{}/app:1", registry.host());
    (registry, dest)
}

#[test]
fn a_missing_file_is_named() {
    let (_registry, dest) = reachable();
    let run = hoist_run(&["push", "/nonexistent/app.tar", &dest]);
    run.fails_with(BAD_ARCHIVE, "/nonexistent/app.tar");
}

#[test]
fn an_empty_file_is_refused() {
    let (_registry, dest) = reachable();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.tar");
    std::fs::write(&path, b"").unwrap();
    hoist_run(&["push", path_str(&path), &dest]).fails_with(BAD_ARCHIVE, "is empty");
}

#[test]
fn a_file_that_is_not_a_tar_is_refused() {
    let (_registry, dest) = reachable();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    std::fs::write(&path, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    hoist_run(&["push", path_str(&path), &dest]).fails_with(BAD_ARCHIVE, "is not a tar archive");
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
    let (_registry, dest) = reachable();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.tar");
    let mut tar = TarWriter::new();
    tar.file("hello.txt", b"hello");
    std::fs::write(&path, tar.finish()).unwrap();
    let run = hoist_run(&["push", path_str(&path), &dest]);
    run.fails_with(BAD_ARCHIVE, "no `manifest.json`");
    assert!(run.stderr.contains("plain.tar"), "names the archive: {}", run.stderr);
}

#[test]
fn a_malformed_destination_is_refused_before_reading_anything() {
    for bad in ["127.0.0.1:5000/App:1", "127.0.0.1:5000/app:", "host:notaport/app", "127.0.0.1:5000//app"] {
        hoist_run(&["push", "/nonexistent.tar", bad]).fails_with(USAGE, "invalid image reference");
    }
}

/// The registry is asked first: its error is the first line, before any
/// plan or layer line, and before the archive is read (it does not exist).
#[test]
fn an_unreachable_registry_is_reported_first() {
    let dir = tempfile::tempdir().unwrap();
    let archive = valid_archive(dir.path());
    // Nothing listens on port 1 of loopback.
    for (path, progress) in [(path_str(&archive), "plain"), ("/nonexistent/app.tar", "plain"), ("-", "bars")] {
        let run = hoist_run(&["push", "--progress", progress, path, "127.0.0.1:1/app:1"]);
        run.fails_with(UNAVAILABLE, "cannot reach the registry at 127.0.0.1:1");
        assert!(run.stderr.starts_with("error: "), "the error comes first: {}", run.stderr);
        assert!(run.stderr.contains("onnection refused"), "{}", run.stderr);
        assert!(run.stderr.contains("hint: check that a registry is running at 127.0.0.1:1"), "{}", run.stderr);
    }
    // --registry re-homing checks the target registry the same way.
    let run = hoist_run(&["push", path_str(&archive), "--registry", "127.0.0.1:1/team"]);
    run.fails_with(UNAVAILABLE, "cannot reach the registry at 127.0.0.1:1");
}

#[test]
fn a_name_that_does_not_resolve_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let archive = valid_archive(dir.path());
    let run = hoist_run(&["push", path_str(&archive), "registry.hoist.invalid/app:1"]);
    run.fails_with(UNAVAILABLE, "cannot reach the registry at registry.hoist.invalid");
    assert!(run.stderr.contains("hint: the name `registry.hoist.invalid` does not resolve"), "{}", run.stderr);
}

/// Something answers, but not a registry: a web server's 404 for `/v2/`,
/// with no `Docker-Distribution-API-Version` header.
#[test]
fn a_server_that_is_not_a_registry_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = std::io::Read::read(&mut stream, &mut request);
        let body = "<html>404 page not found</html>";
        let answer =
            format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        std::io::Write::write_all(&mut stream, answer.as_bytes()).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let archive = valid_archive(dir.path());
    let run = hoist_run(&["push", path_str(&archive), &format!("127.0.0.1:{port}/app:1")]);
    run.fails_with(UNAVAILABLE, "this is not a registry");
    assert!(
        run.stderr.contains(&format!("hint: something other than a registry answers at http://127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    server.join().unwrap();
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

/// A local file hoist cannot use is a local problem (exit 10), not the
/// registry's and not "verification failed".
#[test]
fn an_unreadable_ca_certificate_is_a_local_problem() {
    let dir = tempfile::tempdir().unwrap();
    let archive = valid_archive(dir.path());
    let missing = dir.path().join("missing-ca.pem");
    let run = hoist_run(&["push", "--ca-cert", path_str(&missing), path_str(&archive), "127.0.0.1:1/app:1"]);
    run.fails_with(10, "missing-ca.pem");
}
