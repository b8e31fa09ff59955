//! `hoist push -` and wrapped (`.tar.gz`, `.tar.zst`) archives: one
//! sequential pass, layers held in upload sessions (or staged when only the
//! RepoTags name the destination), checked with skopeo and the Docker Engine.

use std::process::{Command, Stdio};

use hoist_testkit::fixtures::{
    DockerArchive, DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, OciArchive, TarWriter, gzip,
    incompressible_layer, layer_tar, zstd,
};
use hoist_testkit::{TestRegistry, sha256, tools};

use crate::support::{Run, assert_manifest_digest, copy_and_check, hoist, hoist_stdin, path_str, pushed_digest, run};

fn image() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1.0")
        .layer(layer_tar(&[("etc/os-release", b"ID=hoist-stream\n"), ("bin/tool", &vec![7u8; 300_000])]))
        .layer(incompressible_layer(5, 2 * 1024 * 1024 + 33))
}

/// The digest hoist printed for `reference`.
fn printed(run: &Run, reference: &str) -> String {
    pushed_digest(&run.stdout, reference).to_owned()
}

/// Checks with skopeo that `reference` is `fixture` under the printed digest.
fn assert_image(reference: &str, digest: &str, fixture: &ImageFixture) {
    assert_manifest_digest(reference, digest);
    copy_and_check(reference, fixture);
}

/// Blobs the registry has committed (in any repository).
fn committed_blobs(registry: &TestRegistry) -> usize {
    let root = registry.storage().join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(root) else { return 0 };
    prefixes.map(|p| std::fs::read_dir(p.unwrap().path()).unwrap().count()).sum()
}

#[test]
fn stdin_classic_archive_pushes_to_dest() {
    let registry = TestRegistry::start();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let dest = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &dest], bytes, None);
    push.success();
    assert_eq!(push.stdout.lines().count(), 1, "one line: {}", push.stdout);
    assert_image(&dest, &printed(&push, &dest), &fixture);
    assert_eq!(committed_blobs(&registry), 4, "two layers, a config and the manifest");
}

#[test]
fn stdin_push_to_two_repositories_mounts_into_the_second() {
    let registry = TestRegistry::start();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let first = format!("{}/team/app:1.0", registry.host());
    let second = format!("{}/other/app:2", registry.host());
    let push = hoist_stdin(&["push", "-", &first, &second, "--output", "json"], bytes, None);
    push.success();
    let summary: serde_json::Value = serde_json::from_str(&push.stdout).unwrap();
    let images = summary["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let second_actions: Vec<&str> =
        images[1]["blobs"].as_array().unwrap()[1..].iter().map(|b| b["action"].as_str().unwrap()).collect();
    assert_eq!(second_actions, ["mounted", "mounted"], "layers come from the first repository");
    for image in images {
        let reference = image["reference"].as_str().unwrap();
        assert_image(reference, image["digest"].as_str().unwrap(), &fixture);
    }
}

#[test]
fn gzip_and_zstd_wrapped_files_push_in_one_pass() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = image();
    let tar = DockerSaveClassic::new().image(fixture.clone()).build();
    for (name, bytes) in [("app.tar.gz", gzip(&tar)), ("app.tar.zst", zstd(&tar))] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let dest = format!("{}/wrapped/{}:1", registry.host(), name.replace('.', "-"));
        let push = run(hoist().args(["push", path_str(&path), &dest]));
        push.success();
        assert_image(&dest, &printed(&push, &dest), &fixture);
    }
}

#[test]
fn every_layout_pushes_from_stdin() {
    let registry = TestRegistry::start();
    let fixture = image();
    let archives = [
        ("docker25", DockerSaveOci::new().image(fixture.clone()).build()),
        ("docker25-gzip", DockerSaveOci::new().image(fixture.clone()).compression(LayerCompression::Gzip).build()),
        ("docker-archive", DockerArchive::new().image(fixture.clone()).build()),
        ("oci", OciArchive::new().image(fixture.clone()).compression(LayerCompression::Gzip).build()),
    ];
    for (name, bytes) in archives {
        let dest = format!("{}/layouts/{name}:1", registry.host());
        let push = hoist_stdin(&["push", "-", &dest], bytes, None);
        push.success();
        assert_image(&dest, &printed(&push, &dest), &fixture);
    }
}

#[test]
fn repo_tags_from_stdin_are_staged_then_pushed() {
    let registry = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let target = format!("{}/mirror", registry.host());
    let push = hoist_stdin(&["push", "-", "--registry", &target], bytes, Some(tmp.path()));
    push.success();
    let dest = format!("{target}/app:1.0");
    assert_image(&dest, &printed(&push, &dest), &fixture);
    let staging = tmp.path().join("hoist-staging-");
    let staging = staging.to_str().unwrap();
    assert!(push.stderr.contains(staging), "says where it stages: {}", push.stderr);
    assert_eq!(push.stderr.matches("staged layer").count(), 2, "names each staged layer: {}", push.stderr);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the staging directory is removed");
}

/// `tar` with an extra gzip-compressed layer-like entry no image names.
fn with_stray_layer(tar: &[u8], stray: &[u8]) -> Vec<u8> {
    let mut writer = TarWriter::new();
    writer.file("stray/layer.tar.gz", stray);
    let mut out = writer.finish();
    // Drop the end-of-archive blocks and append the original archive.
    while out.len() >= 512 && out[out.len() - 512..].iter().all(|&b| b == 0) {
        out.truncate(out.len() - 512);
    }
    out.extend_from_slice(tar);
    out
}

#[test]
fn an_unreferenced_layer_is_not_committed() {
    let registry = TestRegistry::start();
    let fixture = image();
    let stray = gzip(&layer_tar(&[("stray", b"nobody uses this")]));
    let bytes = with_stray_layer(&DockerSaveClassic::new().image(fixture.clone()).build(), &stray);
    let dest = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &dest], bytes, None);
    push.success();
    assert_image(&dest, &printed(&push, &dest), &fixture);
    let (status, _) = registry.get(&format!("/v2/team/app/blobs/{}", sha256(&stray)));
    assert_eq!(status, 404, "the stray entry's session was cancelled, not committed");
    assert_eq!(committed_blobs(&registry), 4, "two layers, a config and the manifest, nothing else");
}

#[test]
fn a_diff_id_mismatch_moves_no_tag() {
    let registry = TestRegistry::start();
    let fixture = image();
    let mut bytes = DockerSaveClassic::new().image(fixture).build();
    let marker = b"ID=hoist-stream";
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("the layer's file is in the archive");
    bytes[at] = b'X';
    let dest = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &dest], bytes, None);
    push.fails_with(7, "hashes to");
    let (status, _) = registry.get("/v2/team/app/manifests/1.0");
    assert_eq!(status, 404, "no tag was put");
    assert_eq!(committed_blobs(&registry), 0, "no session was committed");
}

#[test]
fn docker_save_piped_to_hoist_pulls_and_runs() {
    tools::require_docker();
    tools::require("busybox", "busybox-static");
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].iter().find_map(|p| std::fs::read(p).ok()).unwrap();
    let mut rootfs = TarWriter::new();
    rootfs.dir("bin");
    rootfs.executable("bin/busybox", &busybox);
    rootfs.file("etc/motd", b"streamed\n");
    let rootfs_path = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs_path, rootfs.finish()).unwrap();
    let unique = format!("{}-{}", std::process::id(), registry.port());
    let local = format!("hoist-it/stream:{unique}");
    let pushed = format!("{}/hoist-it/stream:{unique}", registry.host());
    tools::run_ok(Command::new("docker").args(["import", path_str(&rootfs_path), &local]));

    let mut save = Command::new("docker").args(["save", &local]).stdout(Stdio::piped()).spawn().unwrap();
    let push = run(hoist().args(["push", "-", &pushed]).stdin(Stdio::from(save.stdout.take().unwrap())));
    assert!(save.wait().unwrap().success(), "docker save");
    tools::run_ok(Command::new("docker").args(["rmi", &local]));
    push.success();
    let digest = printed(&push, &pushed);

    tools::run_ok(Command::new("docker").args(["pull", &pushed]));
    let repo_digests =
        tools::run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .RepoDigests}}", &pushed]));
    let said = tools::run(Command::new("docker").args(["run", "--rm", &pushed, "/bin/busybox", "cat", "/etc/motd"]));
    let _ = tools::run(Command::new("docker").args(["rmi", "-f", &pushed]));
    assert!(repo_digests.contains(&digest), "docker pulled what hoist pushed: {repo_digests} vs {digest}");
    assert!(said.status.success(), "docker run failed: {}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(String::from_utf8_lossy(&said.stdout), "streamed\n");
}

#[test]
fn a_stream_cut_inside_a_layer_commits_nothing() {
    let registry = TestRegistry::start();
    let bytes = DockerSaveClassic::new().image(image()).build();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let dest = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &dest], cut, None);
    push.fails_with(3, "cut short");
    assert_eq!(committed_blobs(&registry), 0, "every session was cancelled");
}

#[test]
fn stdin_archive_and_password_stdin_exclude_each_other() {
    let push =
        hoist_stdin(&["push", "-", "127.0.0.1:1/app:1", "--username", "u", "--password-stdin"], Vec::new(), None);
    push.fails_with(2, "--password-stdin");
}

#[test]
fn dests_on_two_registries_are_staged_and_pushed_to_both() {
    let (one, two) = (TestRegistry::start(), TestRegistry::start());
    let tmp = tempfile::tempdir().unwrap();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let first = format!("{}/team/app:1", one.host());
    let second = format!("{}/team/app:1", two.host());
    let push = hoist_stdin(&["push", "-", &first, &second], bytes, Some(tmp.path()));
    push.success();
    assert!(push.stderr.contains("staging its layers"), "says it stages: {}", push.stderr);
    for reference in [&first, &second] {
        assert_image(reference, &printed(&push, reference), &fixture);
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the staging directory is removed");
}

#[test]
fn a_repeat_stream_push_commits_nothing_new() {
    let registry = TestRegistry::start();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let dest = format!("{}/team/app:1.0", registry.host());
    hoist_stdin(&["push", "-", &dest], bytes.clone(), None).success();
    let again = hoist_stdin(&["push", "-", &dest, "--output", "json", "--no-cache"], bytes, None);
    again.success();
    let summary: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    let actions: Vec<&str> =
        summary["images"][0]["blobs"].as_array().unwrap().iter().map(|b| b["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["existed", "existed", "existed"], "HEAD found every blob; the sessions were cancelled");
    assert_image(&dest, summary["images"][0]["digest"].as_str().unwrap(), &fixture);
    assert_eq!(committed_blobs(&registry), 4);
}

#[test]
fn a_stream_push_reports_what_it_has_read_before_its_images_are_known() {
    let registry = TestRegistry::start();
    let bytes = DockerSaveClassic::new().image(image()).build();
    let size = bytes.len() as u64;
    let dest = format!("{}/app:1", registry.host());

    let json = hoist_stdin(&["push", "-", &dest, "--progress", "json"], bytes.clone(), None);
    json.success();
    let events: Vec<serde_json::Value> =
        json.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let plan = kinds.iter().position(|k| *k == "plan").expect("a plan event");
    let reads: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "read").collect();
    let read_bytes: Vec<u64> = reads.iter().map(|e| e["bytes"].as_u64().unwrap()).collect();
    assert!(kinds[..plan].iter().all(|k| *k == "read"), "reads come before the plan: {kinds:?}");
    assert_eq!(read_bytes.first(), Some(&0), "the first says reading started: {read_bytes:?}");
    // The last periodic event may already count every byte (a slow read ends
    // on a 1 MiB boundary); the finished one then repeats it.
    let before_last = &read_bytes[..read_bytes.len() - 1];
    assert!(before_last.windows(2).all(|w| w[0] < w[1]), "{read_bytes:?}");
    assert!(read_bytes.windows(2).all(|w| w[0] <= w[1]), "{read_bytes:?}");
    let last = reads.last().unwrap();
    assert_eq!(last["finished"], true, "{reads:?}");
    assert_eq!(last["bytes"], size, "the whole stream was read: {reads:?}");
    assert_eq!(reads.iter().filter(|e| e["finished"] == true).count(), 1, "{reads:?}");

    let plain_run = hoist_stdin(&["push", "-", &dest, "--progress", "plain"], bytes, None);
    plain_run.success();
    let finished = format!("read: {} of the stream in ", human(size));
    assert!(plain_run.stderr.lines().next().is_some_and(|l| l.starts_with(&finished)), "{}", plain_run.stderr);
}

/// The reporter's `human_bytes`, for this test's small sizes.
#[allow(clippy::cast_precision_loss)]
fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

#[test]
fn a_wrapper_damaged_after_the_last_entry_moves_no_tag() {
    let registry = TestRegistry::start();
    let mut bytes = gzip(&DockerSaveClassic::new().image(image()).build());
    // gzip's trailer: the CRC-32 of the whole tar, then its length.
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0xff;
    let dest = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &dest], bytes, None);
    push.fails_with(3, "cannot read past its last entry");
    let (status, _) = registry.get("/v2/team/app/manifests/1.0");
    assert_eq!(status, 404, "no tag was put");
    assert_eq!(committed_blobs(&registry), 0, "no session was committed");
}

/// Layers committed from upload sessions go into the blob cache like any
/// other, so a later push of the same image elsewhere mounts them.
#[test]
fn a_stream_push_feeds_the_blob_cache() {
    let registry = TestRegistry::start();
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let first = format!("{}/team/app:1.0", registry.host());
    hoist_stdin(&["push", "-", &first], bytes.clone(), None).success();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    std::fs::write(&archive, bytes).unwrap();
    let second = format!("{}/other/app:2", registry.host());
    let push = run(hoist().args(["push", path_str(&archive), &second, "--output", "json"]));
    push.success();
    let summary: serde_json::Value = serde_json::from_str(&push.stdout).unwrap();
    let actions: Vec<&str> =
        summary["images"][0]["blobs"].as_array().unwrap()[1..].iter().map(|b| b["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["mounted", "mounted"], "the cache knew where the streamed layers went");
    assert_image(&second, summary["images"][0]["digest"].as_str().unwrap(), &fixture);
}

/// With no DEST a stream is staged in TMPDIR; when that cannot be written the
/// push stops before sending anything, saying where and what to do.
#[test]
fn an_unwritable_staging_directory_is_a_clear_error() {
    let registry = TestRegistry::start();
    let bytes = DockerSaveClassic::new().image(image()).build();
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let push = hoist_stdin(&["push", "-", "--registry", &registry.host()], bytes, Some(&missing));
    push.fails_with(10, "cannot create a staging directory");
    assert!(push.stderr.contains("point TMPDIR at a disk with room"), "{}", push.stderr);
    assert_eq!(committed_blobs(&registry), 0, "nothing was sent");
}

#[test]
fn an_entry_name_that_comes_again_replaces_the_earlier_one_held_or_staged() {
    // `a/layer.tar` twice (tar's rule: the later one counts), then `b/layer.tar`.
    let fixture = image();
    let config = fixture.config();
    let config_name = format!("{}.json", hoist_testkit::sha256_hex(&config));
    let mut tar = TarWriter::new();
    tar.file("a/layer.tar", &layer_tar(&[("earlier", b"an earlier entry of the same name")]));
    tar.file("a/layer.tar", &fixture.layers[0]);
    tar.file("b/layer.tar", &fixture.layers[1]);
    tar.file(&config_name, &config);
    let manifest =
        format!(r#"[{{"Config":"{config_name}","RepoTags":["app:1.0"],"Layers":["a/layer.tar","b/layer.tar"]}}]"#);
    tar.file("manifest.json", manifest.as_bytes());
    let archive = tar.finish();

    let registry = TestRegistry::start();
    // Held in sessions (a DEST), and staged (RepoTags re-homed by --registry).
    let held = format!("{}/team/app:1.0", registry.host());
    let push = hoist_stdin(&["push", "-", &held], archive.clone(), None);
    assert_image(&held, &printed(push.success(), &held), &fixture);
    let tmp = tempfile::tempdir().unwrap();
    let push =
        hoist_stdin(&["push", "-", "--registry", &format!("{}/staged", registry.host())], archive, Some(tmp.path()));
    let staged = format!("{}/staged/app:1.0", registry.host());
    assert_image(&staged, &printed(push.success(), &staged), &fixture);
    assert_eq!(registry.open_uploads(), 0, "the replaced entry's session was cancelled");
    assert_eq!(tmp.path().read_dir().unwrap().count(), 0, "no staging left behind");
}

#[test]
fn a_named_pipe_is_read_as_a_stream() {
    // `hoist push <(zcat app.tar.gz) DEST` hands hoist a pipe: it cannot be
    // indexed by seeking, and its first bytes must not be lost to a sniff.
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("archive.fifo");
    tools::run_ok(Command::new("mkfifo").arg(&fifo));
    let fixture = image();
    let bytes = DockerSaveClassic::new().image(fixture.clone()).build();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
    };
    let dest = format!("{}/team/piped:1", registry.host());
    let push = run(hoist().args(["push", path_str(&fifo), &dest]));
    writer.join().unwrap();
    assert_image(&dest, &printed(push.success(), &dest), &fixture);
}
