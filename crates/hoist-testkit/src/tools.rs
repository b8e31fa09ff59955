//! The independent checkers: skopeo and the Docker Engine.

use std::path::Path;
use std::process::{Command, Output};

/// Fails the test with one line if `program` is not on the PATH.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(found, "`{program}` is not installed: run `scripts/test.sh` (or `apt-get install {package}`)");
}

/// Runs a command and returns its output; fails the test if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `skopeo inspect` of a loopback reference (`host/repo:tag`), parsed.
pub fn skopeo_inspect(reference: &str) -> serde_json::Value {
    require("skopeo", "skopeo");
    let out = run_ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{reference}")]));
    serde_json::from_str(&out).expect("skopeo inspect prints JSON")
}

/// The raw manifest as the registry serves it, via `skopeo inspect --raw`.
pub fn skopeo_raw_manifest(reference: &str) -> Vec<u8> {
    skopeo_raw_manifest_as(reference, None)
}

/// [`skopeo_raw_manifest`] with `user:password` credentials.
pub fn skopeo_raw_manifest_as(reference: &str, creds: Option<&str>) -> Vec<u8> {
    require("skopeo", "skopeo");
    let mut command = Command::new("skopeo");
    command.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--creds", creds]);
    }
    let output = run(command.arg(format!("docker://{reference}")));
    assert!(output.status.success(), "skopeo inspect --raw failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// `skopeo copy docker://… dir:…`: downloads every blob and verifies every
/// digest, so success proves the pushed image is whole and consistent.
pub fn skopeo_copy_to_dir(reference: &str, dir: &Path) {
    skopeo_copy_to_dir_as(reference, dir, None);
}

/// [`skopeo_copy_to_dir`] with `user:password` credentials.
pub fn skopeo_copy_to_dir_as(reference: &str, dir: &Path, creds: Option<&str>) {
    require("skopeo", "skopeo");
    let mut command = Command::new("skopeo");
    command.args(["copy", "--src-tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--src-creds", creds]);
    }
    run_ok(command.args([&format!("docker://{reference}"), &format!("dir:{}", dir.display())]));
}

/// Fails the test with one line unless the Docker Engine answers.
pub fn require_docker() {
    require("docker", "docker.io");
    let output = run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]));
    assert!(
        output.status.success(),
        "the Docker Engine is not reachable (`docker info` failed: {}); start dockerd",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// `sha256:` of the gunzipped contents of `path`: a pushed layer's diff_id.
pub fn gunzip_sha256(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut plain).unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
    crate::sha256(&plain)
}

/// `sha256:` of the uncompressed contents of the layer blob at `path`,
/// decoded as its manifest `media_type` says (gzip, zstd or a plain tar):
/// what the config's diff_id must be when the media type is honest.
pub fn layer_diff_id(path: &Path, media_type: &str) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let plain = if media_type.ends_with("gzip") {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut plain)
            .unwrap_or_else(|e| panic!("{} is not gzip ({media_type}): {e}", path.display()));
        plain
    } else if media_type.ends_with("zstd") {
        zstd::stream::decode_all(&bytes[..])
            .unwrap_or_else(|e| panic!("{} is not zstd ({media_type}): {e}", path.display()))
    } else {
        assert!(media_type.rsplit('.').next() == Some("tar"), "unexpected layer media type {media_type}");
        bytes
    };
    crate::sha256(&plain)
}
