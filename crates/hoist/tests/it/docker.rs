//! The Docker Engine as the final judge: an image it saved, pushed by hoist,
//! must come back with `docker pull` and run.

use std::process::Command;

use hoist_testkit::TestRegistry;
use hoist_testkit::fixtures::{
    DockerArchive, DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, OciArchive, TarWriter, gzip,
};
use hoist_testkit::tools::{require, require_docker, run, run_ok};

use crate::support::{Run, hoist_run, hoist_stdin, path_str};

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
    pulls_and_runs(&pushed, &push, "a genuine docker save");
}

/// Every layout hoist reads, from a file and from standard input, becomes an
/// image the Docker Engine pulls and runs. This engine (20.10) writes only the
/// classic layout; the others are testkit fixtures of the busybox rootfs.
#[test]
fn every_layout_from_a_file_and_from_stdin_pulls_and_runs() {
    require_docker();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = ImageFixture::new().tag("layouts/busybox:1").layer(busybox_rootfs());
    let classic = DockerSaveClassic::new().image(image.clone()).build();
    let oci = OciArchive::new().image(image.clone()).compression(LayerCompression::Gzip).build();
    let archives: [(&str, Vec<u8>, &[&str]); 7] = [
        ("classic-gz", gzip(&classic), &[]),
        ("classic", classic, &[]),
        ("docker25", DockerSaveOci::new().image(image.clone()).build(), &[]),
        ("docker25-gzip", DockerSaveOci::new().image(image.clone()).compression(LayerCompression::Gzip).build(), &[]),
        ("docker-archive", DockerArchive::new().image(image).build(), &[]),
        ("oci", oci.clone(), &[]),
        ("oci-as-oci", oci, &["--format", "oci"]),
    ];
    let unique = format!("{}-{}", std::process::id(), registry.port());
    for (name, bytes, flags) in archives {
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, &bytes).unwrap();
        let from_file = format!("{}/layouts/{name}-file:{unique}", registry.host());
        let push = hoist_run(&[&["push", path_str(&path), &from_file][..], flags].concat());
        pulls_and_runs(&from_file, push.success(), name);
        let from_stdin = format!("{}/layouts/{name}-stdin:{unique}", registry.host());
        let push = hoist_stdin(&[&["push", "-", &from_stdin][..], flags].concat(), bytes, None);
        pulls_and_runs(&from_stdin, push.success(), name);
    }
}

/// `docker pull` gets the manifest `push` printed, and the image runs.
fn pulls_and_runs(pushed: &str, push: &Run, what: &str) {
    let digest = push.stdout.trim().rsplit_once('@').map(|(_, d)| d.to_owned()).expect("REF@digest on stdout");
    run_ok(Command::new("docker").args(["pull", pushed]));
    let repo_digests =
        run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .RepoDigests}}", pushed]));
    let said = run(Command::new("docker").args(["run", "--rm", pushed, "/bin/busybox", "cat", "/etc/motd"]));
    let _ = run(Command::new("docker").args(["rmi", "-f", pushed]));

    assert!(repo_digests.contains(&digest), "{what}: docker pulled another manifest: {repo_digests} vs {digest}");
    assert!(said.status.success(), "{what}: docker run failed: {}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(String::from_utf8_lossy(&said.stdout), "hoisted\n", "{what}");
}
