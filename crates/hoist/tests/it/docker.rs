//! The Docker Engine as the final judge: an image it saved, pushed by hoist,
//! must come back with `docker pull` and run.

use std::process::Command;

use hoist_testkit::TestRegistry;
use hoist_testkit::fixtures::{
    DockerArchive, DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, OciArchive, TarWriter, gzip,
};
use hoist_testkit::tools::{require, require_docker, run, run_ok};

use crate::support::{Run, hoist_run, hoist_stdin, path_str, pushed_digest};

/// A root filesystem holding Debian's static busybox as `/bin/busybox`, and
/// `motd` as `/etc/motd`.
fn busybox_rootfs(motd: &str) -> Vec<u8> {
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
    tar.file("etc/motd", motd.as_bytes());
    tar.finish()
}

#[test]
fn docker_save_push_pull_run_round_trip() {
    require_docker();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, busybox_rootfs("hoisted\n")).unwrap();
    let unique = format!("{}-{}", std::process::id(), registry.port());
    let local = format!("hoist-it/busybox:{unique}");
    let pushed = format!("{}/hoist-it/busybox:{unique}", registry.host());

    run_ok(Command::new("docker").args(["import", path_str(&rootfs), &local]));
    let archive = dir.path().join("saved.tar");
    run_ok(Command::new("docker").args(["save", "-o", path_str(&archive), &local]));
    run_ok(Command::new("docker").args(["rmi", &local]));

    let push = hoist_run(&["push", path_str(&archive), &pushed]);
    push.success();
    pulls_and_runs(&pushed, &push, "hoisted\n");
}

/// Every layout hoist reads, from a file and from standard input, becomes an
/// image the Docker Engine pulls and runs. This engine (20.10) writes only the
/// classic layout; the others are testkit fixtures of the busybox rootfs. Each
/// push carries its own `/etc/motd`, so no layer is one Docker already holds
/// or one the registry could mount: every pull downloads what hoist pushed.
#[test]
fn every_layout_from_a_file_and_from_stdin_pulls_and_runs() {
    require_docker();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let unique = format!("{}-{}", std::process::id(), registry.port());
    let layouts: [(&str, &[&str]); 7] = [
        ("classic-gz", &[]),
        ("classic", &[]),
        ("docker25", &[]),
        ("docker25-gzip", &[]),
        ("docker-archive", &[]),
        ("oci", &[]),
        ("oci-as-oci", &["--format", "oci"]),
    ];
    for (layout, flags) in layouts {
        for source in ["file", "stdin"] {
            let motd = format!("hoisted from {layout} ({source}) {unique}\n");
            let bytes = archive(layout, ImageFixture::new().tag("layouts/busybox:1").layer(busybox_rootfs(&motd)));
            let pushed = format!("{}/layouts/{layout}-{source}:{unique}", registry.host());
            let push = if source == "file" {
                let path = dir.path().join(format!("{layout}.tar"));
                std::fs::write(&path, &bytes).unwrap();
                hoist_run(&[&["push", path_str(&path), &pushed][..], flags].concat())
            } else {
                hoist_stdin(&[&["push", "-", &pushed][..], flags].concat(), bytes, None)
            };
            pulls_and_runs(&pushed, push.success(), &motd);
        }
    }
}

/// `image` written in `layout`.
fn archive(layout: &str, image: ImageFixture) -> Vec<u8> {
    match layout {
        "classic-gz" => gzip(&DockerSaveClassic::new().image(image).build()),
        "classic" => DockerSaveClassic::new().image(image).build(),
        "docker25" => DockerSaveOci::new().image(image).build(),
        "docker25-gzip" => DockerSaveOci::new().image(image).compression(LayerCompression::Gzip).build(),
        "docker-archive" => DockerArchive::new().image(image).build(),
        "oci" | "oci-as-oci" => OciArchive::new().image(image).compression(LayerCompression::Gzip).build(),
        other => panic!("no layout {other}"),
    }
}

/// `docker pull` gets the manifest `push` printed, and the image runs,
/// printing `motd`.
fn pulls_and_runs(pushed: &str, push: &Run, motd: &str) {
    let digest = pushed_digest(&push.stdout, pushed);
    run_ok(Command::new("docker").args(["pull", pushed]));
    let repo_digests =
        run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .RepoDigests}}", pushed]));
    let said = run(Command::new("docker").args(["run", "--rm", pushed, "/bin/busybox", "cat", "/etc/motd"]));
    let _ = run(Command::new("docker").args(["rmi", "-f", pushed]));

    assert!(repo_digests.contains(digest), "{pushed}: docker pulled another manifest: {repo_digests} vs {digest}");
    assert!(said.status.success(), "{pushed}: docker run failed: {}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(String::from_utf8_lossy(&said.stdout), motd);
}
