//! hoist as one file to carry: it needs nothing but the C library at run
//! time.

use std::path::Path;
use std::process::Command;

use hoist_testkit::tools;

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
