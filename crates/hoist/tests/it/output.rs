//! What `hoist push` prints: results on stdout, progress on stderr in the chosen mode.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, layer_tar};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry, tools};

use crate::support::{hoist_run, path_str};

fn archive(dir: &std::path::Path) -> (std::path::PathBuf, ImageFixture) {
    let path = dir.join("app.tar");
    let fixture = ImageFixture::new()
        .tag("app:1")
        .layer(layer_tar(&[("a", b"a")]))
        .layer(layer_tar(&[("b", &vec![1u8; 70_000])]));
    DockerSaveClassic::new().image(fixture.clone()).write_to(&path);
    (path, fixture)
}

#[test]
fn progress_json_is_ndjson_on_stderr_with_every_event() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (path, fixture) = archive(dir.path());
    let dest = format!("{}/app:1", registry.host());
    let run = hoist_run(&["push", "--progress", "json", path_str(&path), &dest]);
    run.success();
    assert_eq!(run.stdout.lines().count(), 1, "stdout holds only the result");
    let events: Vec<serde_json::Value> =
        run.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(events[0]["blobs"], 3, "two layers and a config");
    assert_eq!(kinds.iter().filter(|k| **k == "start").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "done").count(), 3);
    assert!(kinds.contains(&"progress"));
    let manifest = events.iter().find(|e| e["event"] == "manifest").expect("a manifest event");
    assert_eq!(manifest["reference"], dest);
    assert_eq!(format!("{dest}@{}", manifest["digest"].as_str().unwrap()), run.stdout.trim());
    for diff_id in fixture.diff_ids() {
        assert!(events.iter().any(|e| e["event"] == "done" && e["id"] == diff_id), "done event for {diff_id}");
    }
}

fn ndjson(stderr: &str) -> Vec<serde_json::Value> {
    stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect()
}

/// A 503 on starting an upload is retried by the registry client; the
/// retry reaches the reporter in every mode.
#[test]
fn retries_are_reported_as_events_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let push = |progress: &str| {
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(registry.port(), vec![Rule::first(1, Fault::Status(503)).method("POST")]);
        let dest = format!("{}/app:1", proxy.host());
        let run =
            hoist_run(&["push", "--no-cache", "--output", "json", "--progress", progress, path_str(&path), &dest]);
        run.success();
        assert_eq!(proxy.faulted().len(), 1, "the proxy answered 503 once");
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let retries: Vec<u64> =
            summary["images"][0]["blobs"].as_array().unwrap().iter().map(|b| b["retries"].as_u64().unwrap()).collect();
        assert_eq!(retries.iter().sum::<u64>(), 1, "the retry is counted on the blob it delayed: {retries:?}");
        tools::skopeo_copy_to_dir(&format!("{}/app:1", registry.host()), &dir.path().join(progress));
        run
    };

    let json = push("json");
    let events = ndjson(&json.stderr);
    let retries: Vec<_> = events.iter().filter(|e| e["event"] == "retry").collect();
    assert_eq!(retries.len(), 1, "{}", json.stderr);
    let retry = retries[0];
    assert!(retry["reason"].as_str().unwrap().contains("503"), "{retry}");
    assert!(retry["action"].as_str().unwrap().contains("app"), "{retry}");
    assert_eq!(retry["attempt"], 1);
    assert!(retry["delay_ms"].is_u64());
    let position = |kind: &str| events.iter().position(|e| e["event"] == kind).unwrap();
    assert!(position("retry") < position("manifest"), "the retry comes before the manifest");

    // Bars print the line above themselves (here stderr is no terminal, so only the line shows).
    for mode in ["plain", "bars"] {
        let run = push(mode);
        let lines: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("retrying: ")).collect();
        assert_eq!(lines.len(), 1, "{mode}: {}", run.stderr);
        assert!(lines[0].contains("503") && lines[0].contains("attempt 1"), "{mode}: {}", lines[0]);
    }
}

/// The second repository of one push mounts the layers the first received:
/// a `mounted` event in JSON, a `mounted` line in plain mode.
#[test]
fn mounts_are_reported_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (path, fixture) = archive(dir.path());
    for progress in ["json", "plain"] {
        let registry = TestRegistry::start();
        let first = format!("{}/first/app:1", registry.host());
        let second = format!("{}/second/app:1", registry.host());
        let run = hoist_run(&[
            "push",
            "--no-cache",
            "--output",
            "json",
            "--progress",
            progress,
            path_str(&path),
            &first,
            &second,
        ]);
        run.success();
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let blobs = |image: usize| summary["images"][image]["blobs"].as_array().unwrap().clone();
        assert_eq!(summary["images"][1]["reference"], second);
        for (blob, uploaded) in blobs(1).iter().skip(1).zip(blobs(0).iter().skip(1)) {
            assert_eq!(blob["action"], "mounted", "{blob}");
            assert_eq!(blob["bytes_sent"], 0, "nothing is sent for a mount");
            assert_eq!((&blob["digest"], &blob["compression"]), (&uploaded["digest"], &uploaded["compression"]));
        }
        tools::skopeo_copy_to_dir(&second, &dir.path().join(progress));
        if progress == "json" {
            let events = ndjson(&run.stderr);
            for diff_id in fixture.diff_ids() {
                let finished: Vec<&str> = events
                    .iter()
                    .filter(|e| {
                        e["id"] == diff_id && ["done", "skipped", "mounted"].contains(&e["event"].as_str().unwrap())
                    })
                    .map(|e| e["event"].as_str().unwrap())
                    .collect();
                assert_eq!(finished, ["done", "mounted"], "{diff_id}: uploaded to first, mounted into second");
            }
        } else {
            let mounted = run.stderr.lines().filter(|l| l.contains(": mounted as ")).count();
            assert_eq!(mounted, 2, "a line per mounted layer: {}", run.stderr);
        }
    }
}

#[test]
fn progress_json_reports_errors_as_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let run = hoist_run(&["push", "--progress", "json", path_str(&path), "127.0.0.1:1/app:1"]);
    assert_eq!(run.code, 6);
    let error = run
        .stderr
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().filter(|e| e["event"] == "error"));
    let error = error.unwrap_or_else(|| panic!("no error event in {}", run.stderr));
    assert!(error["message"].as_str().unwrap().contains("127.0.0.1:1"));
    assert!(error["hint"].is_string());
}

#[test]
fn output_json_summarises_references_digests_and_blobs() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (path, fixture) = archive(dir.path());
    let dest = format!("{}/app:1", registry.host());
    let first = hoist_run(&["push", "--output", "json", "--progress", "none", path_str(&path), &dest]);
    first.success();
    assert!(first.stderr.is_empty(), "--progress none prints nothing on success: {}", first.stderr);
    let summary: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    let image = &summary["images"][0];
    assert_eq!(image["reference"], dest);
    assert_eq!(image["digest"], tools::skopeo_inspect(&dest)["Digest"]);
    let blobs = image["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs[0]["digest"], fixture.config_digest());
    assert!(
        blobs.iter().all(|b| b["action"] == "uploaded" && b["size"].as_u64().unwrap() > 0 && b["seconds"].is_number())
    );
    assert!(blobs.iter().all(|b| b["retries"] == 0 && b["bytes_sent"] == b["size"]), "{blobs:?}");
    let compression: Vec<&str> = blobs.iter().map(|b| b["compression"].as_str().unwrap()).collect();
    assert_eq!(compression, ["stored", "gzip:2", "gzip:2"], "the config as it is, layers with the default codec");

    let again = hoist_run(&["push", "--output", "json", "-q", path_str(&path), &dest]);
    let summary: serde_json::Value = serde_json::from_str(&again.success().stdout).unwrap();
    assert_eq!(summary["images"][0]["digest"], image["digest"]);
    assert_eq!(summary["images"][0]["blobs"][0]["action"], "existed", "the config is found by HEAD");
    for blob in summary["images"][0]["blobs"].as_array().unwrap() {
        assert_eq!((&blob["action"], &blob["bytes_sent"]), (&"existed".into(), &0.into()), "{blob}");
    }
}

#[test]
fn plain_progress_is_lines_and_bars_do_not_disturb_stdout() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let dest = format!("{}/app:1", registry.host());
    let plain = hoist_run(&["push", path_str(&path), &dest]);
    plain.success();
    assert!(plain.stderr.lines().next().unwrap().starts_with("pushing 3 blobs"), "{}", plain.stderr);
    assert!(plain.stderr.contains(&format!("pushed {dest}")), "{}", plain.stderr);
    let bars = hoist_run(&["push", "--progress", "bars", path_str(&path), &dest]);
    assert_eq!(bars.success().stdout, plain.stdout);
}

/// Warnings (here a corrupt blob cache) and log lines are events too:
/// stderr stays one JSON object per line.
#[test]
fn warnings_are_events_in_progress_json() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("blobs.json"), b"{broken").unwrap();
    let dest = format!("{}/app:1", registry.host());
    let args = ["push", "--progress", "json", "-v", "--cache-dir", path_str(&cache), path_str(&path), &dest];
    let run = hoist_run(&args);
    run.success();
    let events = ndjson(&run.stderr);
    let warning = events.iter().find(|e| e["event"] == "warning").expect("a warning event");
    assert!(warning["message"].as_str().unwrap().contains("ignoring the blob cache"), "{warning}");
    assert!(events.iter().any(|e| e["event"] == "log"), "-v log lines are events too");
}

/// Failures in `--progress json` are one `error` event (with its hint) and
/// nothing else, for push, pull and copy, usage errors included.
#[test]
fn failures_are_one_error_event_in_progress_json() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let out = dir.path().join("out.tar");
    let cases: [(&[&str], i32); 4] = [
        (&["push", "--progress", "json", path_str(&path), "127.0.0.1:9/app:1"], 6),
        (&["push", "--progress", "json", path_str(&path), "not//a:reference"], 2),
        (&["pull", "--progress", "json", "127.0.0.1:9/app:1", path_str(&out)], 6),
        (&["copy", "--progress", "json", "127.0.0.1:9/app:1", "127.0.0.1:9/other:1"], 6),
    ];
    for (args, code) in cases {
        let run = hoist_run(args);
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        let events = ndjson(&run.stderr);
        let errors: Vec<_> = events.iter().filter(|e| e["event"] == "error").collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error event: {}", run.stderr);
        assert!(!errors[0]["hint"].as_str().unwrap_or_default().is_empty(), "{args:?}: {}", errors[0]);
        assert_eq!(events.last(), Some(errors[0]), "{args:?}: the error comes last");
    }
}

/// A reader that stops reading (`| head -0`) is not a failure of the push.
#[test]
fn a_closed_stdout_after_a_successful_push_is_quiet() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = archive(dir.path());
    let dest = format!("{}/app:1", registry.host());
    let mut child = crate::support::hoist()
        .args(["push", "-q", path_str(&path), &dest])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing said: {stderr}");
    let (status, _) = registry.get("/v2/app/manifests/1");
    assert_eq!(status, 200, "the push itself went through");
}
