use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use hoist_testkit::fixtures::ImageFixture;
use hoist_testkit::{sha256, tools};

/// The `hoist` binary under test: this build's, or `HOIST_BIN` (to run the
/// suite against another build, e.g. to see a test fail without its fix).
pub(crate) fn hoist() -> Command {
    let binary = std::env::var_os("HOIST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hoist").into());
    let mut command = Command::new(binary);
    // Tests never share the user's blob cache; each test process gets its own.
    let cache = std::env::temp_dir().join(format!("hoist-it-cache-{}", std::process::id()));
    command.env_remove("HOIST_LOG").env("NO_COLOR", "1").env("HOIST_CACHE_DIR", cache);
    command
}

/// What a finished hoist run printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn success(&self) -> &Self {
        assert_eq!(self.code, 0, "hoist failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// Asserts a failure with `code`, an `error:` line containing `message`
    /// and a `hint:` line; and no panic.
    pub(crate) fn fails_with(&self, code: i32, message: &str) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stdout.is_empty(), "nothing on stdout on failure, got: {}", self.stdout);
        let error = self
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no `error:` line in: {}", self.stderr));
        assert!(error.contains(message), "expected `{message}` in: {error}");
        assert!(self.stderr.lines().any(|l| l.starts_with("hint: ")), "no `hint:` line in: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "hoist panicked: {}", self.stderr);
        self
    }
}

pub(crate) fn run(command: &mut Command) -> Run {
    let Output { status, stdout, stderr } = command.output().expect("run hoist");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `hoist ARGS…`
pub(crate) fn hoist_run(args: &[&str]) -> Run {
    run(hoist().args(args))
}

/// `hoist ARGS…` with `input` on standard input.
pub(crate) fn hoist_stdin(args: &[&str], input: Vec<u8>, tmpdir: Option<&Path>) -> Run {
    let mut command = hoist();
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(tmpdir) = tmpdir {
        command.env("TMPDIR", tmpdir);
    }
    let mut child = command.spawn().expect("run hoist");
    let mut stdin = child.stdin.take().unwrap();
    // hoist may stop reading early on an error: a broken pipe here is fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for hoist");
    writer.join().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `command` with `input` on standard input.
pub(crate) fn with_stdin(command: &mut Command, input: &str) -> Run {
    with_input(command, input.as_bytes().to_vec())
}

/// Runs `command` with `input` (any bytes) on standard input.
pub(crate) fn with_input(command: &mut Command, input: Vec<u8>) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // hoist may stop reading early on an error: a broken pipe here is fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `script` to `path`, executable: a fake program for a test.
pub(crate) fn write_executable(path: &Path, script: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, script).unwrap();
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(path, permissions).unwrap();
}

/// `PATH` with `bin` first: where a test puts its fake programs.
pub(crate) fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut paths = vec![bin.to_owned()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).unwrap()
}

/// A finished run with what it cost: its peak resident memory (from the
/// kernel's accounting of that one child) and its wall time.
pub(crate) struct Measured {
    pub(crate) run: Run,
    pub(crate) peak_mib: u64,
    pub(crate) seconds: f64,
}

/// Runs `command` to its end, measuring its peak memory and wall time.
#[allow(unsafe_code, clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
pub(crate) fn run_measured(command: &mut Command) -> Measured {
    let started = std::time::Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run hoist");
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with pointers to live locals.
    let waited = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(waited, pid, "wait4 on hoist");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Measured {
        run: Run { code, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() },
        peak_mib: u64::try_from(usage.ru_maxrss).unwrap_or(0) / 1024,
        seconds: started.elapsed().as_secs_f64(),
    }
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// The manifest digest on the `REF@sha256:…` stdout line for `reference`.
pub(crate) fn pushed_digest<'a>(stdout: &'a str, reference: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{reference}@")))
        .unwrap_or_else(|| panic!("no line for {reference} in {stdout}"));
    &line[reference.len() + 1..]
}

/// An image copied out of the registry by skopeo, which verifies every blob
/// digest on the way.
pub(crate) struct CopiedImage {
    pub(crate) manifest: serde_json::Value,
    dir: tempfile::TempDir,
}

impl CopiedImage {
    pub(crate) fn layer_digests(&self) -> Vec<String> {
        self.layers().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
    }

    pub(crate) fn layer_types(&self) -> Vec<&str> {
        self.layers().iter().map(|l| l["mediaType"].as_str().unwrap()).collect()
    }

    pub(crate) fn config(&self) -> Vec<u8> {
        self.blob(self.manifest["config"]["digest"].as_str().unwrap())
    }

    fn layers(&self) -> &Vec<serde_json::Value> {
        self.manifest["layers"].as_array().unwrap()
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(digest.trim_start_matches("sha256:"))).unwrap()
    }
}

/// Copies `reference` out with skopeo and checks that it is `fixture`: its
/// config, and each layer, decoded as its media type says, hashing to the
/// fixture's diff_id.
pub(crate) fn copy_and_check(reference: &str, fixture: &ImageFixture) -> CopiedImage {
    copy_and_check_as(reference, fixture, None)
}

/// [`copy_and_check`] with skopeo logged in as `user:password`.
pub(crate) fn copy_and_check_as(reference: &str, fixture: &ImageFixture, creds: Option<&str>) -> CopiedImage {
    let dir = tempfile::tempdir().unwrap();
    tools::skopeo_copy_to_dir_as(reference, dir.path(), creds);
    let manifest = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let image = CopiedImage { manifest, dir };
    assert_eq!(image.manifest["config"]["digest"], fixture.config_digest(), "{reference}");
    assert_eq!(image.config(), fixture.config(), "{reference}: the config goes up byte for byte");
    assert_eq!(image.layers().len(), fixture.layers.len(), "{reference}");
    for (layer, diff_id) in image.layers().iter().zip(fixture.diff_ids()) {
        let digest = layer["digest"].as_str().unwrap();
        let path = image.dir.path().join(digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), layer["size"].as_u64().unwrap(), "{reference}: {digest}");
        let media_type = layer["mediaType"].as_str().unwrap();
        assert_eq!(
            tools::layer_diff_id(&path, media_type),
            diff_id,
            "{reference}: layer {digest} decodes to its diff_id"
        );
    }
    image
}

/// The manifest the registry serves for `reference` hashes to `digest`.
pub(crate) fn assert_manifest_digest(reference: &str, digest: &str) {
    assert_eq!(
        sha256(&tools::skopeo_raw_manifest(reference)),
        digest,
        "{reference}: the manifest hashes to the printed digest"
    );
}
