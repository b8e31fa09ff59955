use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `hoist` binary under test.
pub(crate) fn hoist() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
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

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
