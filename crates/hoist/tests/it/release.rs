//! hoist as one file to carry: it needs nothing but the C library at run
//! time, and works in a container whose filesystem holds only that binary,
//! the C library and an archive (no CA store, no /etc, no shell).

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, layer_tar};
use hoist_testkit::{TestCa, TestRegistry, tools};

use crate::support::{hoist_run, path_str};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hoist"))
}

/// `scripts/check-linkage.sh`: the allow-list that release.sh applies too.
/// The test binary is a debug build; its dynamic dependencies are the
/// release build's (the same crates and features link the same libraries).
#[test]
fn the_binary_needs_only_the_c_library() {
    tools::require("ldd", "libc-bin");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-linkage.sh");
    let output = tools::run(Command::new(&script).arg(binary()));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn version_names_the_commit() {
    let run = hoist_run(&["--version"]);
    let version = run.success().stdout.trim().to_owned();
    let expected = format!("hoist {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected) && version.ends_with(')'), "{version}");
    let commit = &version[expected.len()..version.len() - 1];
    let head = tools::run(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]));
    if head.status.success() {
        assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim(), "built from HEAD");
    } else {
        assert_eq!(commit, "unknown", "outside git the commit is unknown");
    }
}

/// Every command `hoist --help` lists has a one-line example under it.
#[test]
fn help_shows_an_example_for_every_command() {
    let run = hoist_run(&["--help"]);
    let help = &run.success().stdout;
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 3, "{help}");
    for command in commands {
        let example = format!("  hoist {command} ");
        assert!(help.lines().any(|l| l.starts_with(&example)), "no example for `{command}`: {help}");
    }
}

/// Completions and man pages are generated from the clap definitions, so
/// they know every flag.
#[test]
fn completions_and_man_pages_know_every_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let run = hoist_run(&["completions", shell]);
        assert!(run.success().stdout.contains("password-stdin"), "{shell}: {}", run.stdout);
    }
    let dir = tempfile::tempdir().unwrap();
    hoist_run(&["manpages", path_str(dir.path())]).success();
    for page in ["hoist.1", "hoist-push.1", "hoist-inspect.1", "hoist-completions.1", "hoist-login.1", "hoist-logout.1"]
    {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is a man page: {text}");
    }
    let push = std::fs::read_to_string(dir.path().join("hoist-push.1")).unwrap();
    assert!(push.contains("chunk\\-size"), "{push}");
    assert!(push.contains("no\\-create") && push.contains("harbor\\-session"), "{push}");
}

/// A root filesystem: `/hoist`, the libraries `ldd` names (at the same
/// paths, symlinks resolved), and `files` copied in by name.
struct BareImage {
    tag: String,
}

impl BareImage {
    fn build(files: &[(&str, &Path)]) -> Self {
        tools::require_docker();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        copy(binary(), &root.join("hoist"));
        for library in libraries(binary()) {
            copy(&library, &root.join(library.strip_prefix("/").unwrap()));
        }
        for (name, source) in files {
            copy(source, &root.join(name));
        }
        let tag = format!("hoist-bare:it-{}", std::process::id());
        let tar = tools::run(Command::new("tar").args(["-C", path_str(root), "-cf", "-", "."]));
        assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
        let mut import = Command::new("docker")
            .args(["import", "-", &tag])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run docker import");
        std::io::Write::write_all(import.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
        drop(import.stdin.take());
        let imported = import.wait_with_output().unwrap();
        assert!(imported.status.success(), "docker import: {}", String::from_utf8_lossy(&imported.stderr));
        Self { tag }
    }

    /// `docker run` of `/hoist ARGS…` on the host's network (the test
    /// registries listen on its loopback).
    fn hoist(&self, args: &[&str]) -> crate::support::Run {
        crate::support::run(
            Command::new("docker").args(["run", "--rm", "--network", "host", &self.tag, "/hoist"]).args(args),
        )
    }
}

impl Drop for BareImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "--force", &self.tag]).output();
    }
}

/// The absolute paths `ldd` lists: `libc.so.6 => /lib/…/libc.so.6 (…)` and
/// the loader `/lib64/ld-linux-x86-64.so.2 (…)`.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = tools::run_ok(Command::new("ldd").arg(binary));
    out.lines()
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

/// Copies the file `from` (following symlinks) to `to`, making directories.
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

#[test]
fn runs_in_a_container_holding_only_itself_and_the_c_library() {
    let registry = TestRegistry::start();
    let ca = TestCa::generate();
    let tls_registry = TestRegistry::builder().tls(&ca).start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let image = ImageFixture::new().tag("bare/app:1").layer(layer_tar(&[("etc/motd", b"carried in\n")]));
    DockerSaveClassic::new().image(image).write_to(&archive);
    let bare = BareImage::build(&[("app.tar", &archive), ("ca.pem", &ca.ca_cert())]);

    let version = bare.hoist(&["--version"]);
    assert!(version.success().stdout.starts_with("hoist "), "{}", version.stdout);
    let inspect = bare.hoist(&["inspect", "/app.tar"]);
    assert!(inspect.success().stdout.contains("bare/app:1"), "{}", inspect.stdout);

    // Plain HTTP to loopback: no CA store involved, and no word about one.
    let plain = format!("{}/bare/app:1", registry.host());
    let push = bare.hoist(&["push", "/app.tar", &plain]);
    push.success();
    assert!(!push.stderr.contains("CA certificates"), "{}", push.stderr);
    tools::skopeo_copy_to_dir(&plain, dir.path().join("plain").as_path());

    // HTTPS with --ca-cert works as on any host; the one-line notice says
    // that the system store is missing and what is trusted instead.
    let secure = format!("{}/bare/app:1", tls_registry.host());
    let push = bare.hoist(&["push", "/app.tar", &secure, "--https", "--ca-cert", "/ca.pem"]);
    push.success();
    let notices: Vec<_> = push.stderr.lines().filter(|l| l.contains("no CA certificates on this machine")).collect();
    assert_eq!(notices.len(), 1, "one notice: {}", push.stderr);
    assert!(notices[0].contains("public roots built into hoist"), "{}", notices[0]);
}
