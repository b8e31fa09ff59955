//! Ctrl-C and SIGTERM in the middle of a push: open upload sessions are
//! cancelled, staging is removed, what was published is reported, and the
//! exit code says which signal (130, 143).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry};

use crate::support::{Run, hoist, path_str};

fn image(big: usize) -> ImageFixture {
    ImageFixture::new()
        .tag("app:1")
        .layer(layer_tar(&[("etc/signal", b"interrupted\n")]))
        .layer(incompressible_layer(30, big))
}

#[allow(unsafe_code)]
pub(crate) fn send(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
}

pub(crate) fn finish(child: Child) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits up to 20 s for `ready`.
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn staging_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("hoist-staging-")))
        .collect()
}

#[test]
fn ctrl_c_during_a_staged_stream_removes_the_staging_directory() {
    let registry = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = DockerSaveClassic::new().image(image(8 << 20)).build();
    let mut child = hoist()
        .args(["push", "-", "--registry", &registry.host()])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Most of the archive, and the input stays open: hoist is mid-stream.
    stdin.write_all(&bytes[..bytes.len() * 3 / 4]).unwrap();
    wait_until("a staged layer", || {
        staging_dirs(tmp.path()).iter().any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()))
    });
    send(&child, libc::SIGINT);
    let run = finish(child);
    drop(stdin);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stderr.contains("error: interrupted by SIGINT"), "{}", run.stderr);
    assert!(run.stderr.lines().any(|l| l.starts_with("hint: ")), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing was published: {}", run.stdout);
    assert!(staging_dirs(tmp.path()).is_empty(), "the staging directory is gone");
    assert_eq!(registry.blob_count(), 0, "nothing was pushed");
}

#[test]
fn sigterm_during_uploads_cancels_the_open_sessions() {
    let registry = TestRegistry::start();
    // Every PATCH hangs with its session open.
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::Stall).method("PATCH")]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    DockerSaveClassic::new().image(image(1 << 20)).write_to(&archive);
    let dest = format!("{}/app:1", proxy.host());
    let child = spawn(hoist().args(["push", "--no-cache", "--jobs", "2", path_str(&archive), &dest]));
    wait_until("two uploads in flight", || proxy.count("PATCH", "/blobs/uploads/") == 2);
    assert_eq!(registry.open_uploads(), 2);
    send(&child, libc::SIGTERM);
    let run = finish(child);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert!(run.stderr.contains("interrupted by SIGTERM; cancelled the 2 uploads that were open"), "{}", run.stderr);
    assert_eq!(registry.open_uploads(), 0, "the sessions were cancelled");
    let (status, _) = registry.get("/v2/app/manifests/1");
    assert_eq!(status, 404);
}

/// Interrupted between two tags: the one published is on stdout, and the
/// error names the one that was not.
#[test]
fn an_interrupted_push_reports_what_it_published() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::Stall).method("PUT").path("/manifests/")]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    DockerSaveClassic::new().image(image(100_000)).write_to(&archive);
    let first = format!("{}/app:1", registry.host());
    let second = format!("{}/app:2", proxy.host());
    let child = spawn(hoist().args(["push", "--no-cache", "-q", path_str(&archive), &first, &second]));
    wait_until("the second tag's manifest", || proxy.count("PUT", "/manifests/") == 1);
    send(&child, libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stdout.starts_with(&format!("{first}@sha256:")), "{}", run.stdout);
    let error = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(error.contains(&format!("not published: {second}")), "{error}");
}

fn spawn(command: &mut Command) -> Child {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Ctrl-C in the middle of a pull to a file: exit 130, and no archive, not
/// even a partial one, is left claiming to be anything.
#[test]
fn ctrl_c_during_a_pull_leaves_no_archive() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    DockerSaveClassic::new().image(image(1 << 20)).write_to(&saved);
    let reference = format!("{}/app:1", registry.host());
    crate::support::hoist_run(&["push", "-q", path_str(&saved), &reference]).success();
    // Every blob download hangs.
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::Stall).method("GET").path("/blobs/")]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("pulled.tar");
    let child = spawn(hoist().args(["pull", "-q", &format!("{}/app:1", proxy.host()), path_str(&archive)]));
    wait_until("a blob download", || proxy.count("GET", "/blobs/") >= 1);
    send(&child, libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stderr.contains("interrupted by SIGINT; the unfinished archive was removed"), "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
