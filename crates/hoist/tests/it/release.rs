//! hoist as one file to carry: it needs nothing but the C library at run
//! time; it names its commit, and makes its own completions and man pages.

use std::path::Path;
use std::process::Command;

use hoist_testkit::tools;

use crate::support::{hoist_run, path_str};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hoist"))
}

/// `scripts/check-linkage.sh` holds the allow-list.
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
    for page in ["hoist.1", "hoist-push.1", "hoist-inspect.1", "hoist-completions.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is a man page: {text}");
    }
    let push = std::fs::read_to_string(dir.path().join("hoist-push.1")).unwrap();
    assert!(push.contains("chunk\\-size"), "{push}");
}
