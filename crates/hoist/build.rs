//! Names the commit hoist is built from in `hoist --version`: `git rev-parse`
//! where the source is a git checkout, `unknown` elsewhere (a source tarball,
//! `cargo install` from crates.io, or no git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Only if this source is tracked by the repository git finds: an unpacked
    // source tarball may sit inside some unrelated checkout.
    let tracked = git(&["ls-files", "--full-name", "build.rs"]).is_some();
    let commit = tracked.then(|| git(&["rev-parse", "--short=12", "HEAD"])).flatten();
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HOIST_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself (a checkout), the branch it
    // names (a commit), or packed-refs; while this file is not committed
    // yet, the index (it may be about to be). `--git-path` finds each in a
    // worktree too. Only existing paths: a missing one reruns every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if !tracked {
        watched.push("index".to_owned());
    }
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of a git command run in this crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
