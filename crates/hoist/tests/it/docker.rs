//! The Docker Engine as the final judge: an image it saved, pushed by hoist,
//! must come back with `docker pull` and run.

use std::process::Command;

use hoist_testkit::TestRegistry;
use hoist_testkit::fixtures::TarWriter;
use hoist_testkit::tools::{require, require_docker, run, run_ok};

use crate::support::{hoist_run, path_str};

/// A root filesystem holding Debian's static busybox as `/bin/busybox`.
fn busybox_rootfs() -> Vec<u8> {
    require("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("busybox-static provides /bin/busybox");
    let mut tar = TarWriter::new();
    tar.dir("bin");
    tar.executable("bin/busybox", &busybox);
    for applet in ["sh", "echo", "cat"] {
        tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.file("etc/motd", b"hoisted\n");
    tar.finish()
}

#[test]
fn docker_save_push_pull_run_round_trip() {
    require_docker();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, busybox_rootfs()).unwrap();
    let unique = format!("{}-{}", std::process::id(), registry.port());
    let local = format!("hoist-it/busybox:{unique}");
    let pushed = format!("{}/hoist-it/busybox:{unique}", registry.host());

    run_ok(Command::new("docker").args(["import", path_str(&rootfs), &local]));
    let archive = dir.path().join("saved.tar");
    run_ok(Command::new("docker").args(["save", "-o", path_str(&archive), &local]));
    run_ok(Command::new("docker").args(["rmi", &local]));

    let push = hoist_run(&["push", path_str(&archive), &pushed]);
    push.success();
    let digest = push.stdout.trim().rsplit_once('@').map(|(_, d)| d.to_owned()).expect("REF@digest on stdout");

    run_ok(Command::new("docker").args(["pull", &pushed]));
    let repo_digests =
        run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .RepoDigests}}", &pushed]));
    let said = run(Command::new("docker").args(["run", "--rm", &pushed, "/bin/busybox", "cat", "/etc/motd"]));
    let _ = run(Command::new("docker").args(["rmi", "-f", &pushed]));

    assert!(repo_digests.contains(&digest), "docker pulled the manifest hoist pushed: {repo_digests} vs {digest}");
    assert!(said.status.success(), "docker run failed: {}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(String::from_utf8_lossy(&said.stdout), "hoisted\n");
}
