//! Builds ISA-L's igzip (and the crc code it uses) into a static library with
//! ISA-L's own `Makefile.unx`: make, a C compiler and nasm, no autotools.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=isa-l");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let source = out.join("isa-l");
    // make writes its objects next to the sources: build in a copy under OUT_DIR.
    if source.exists() {
        std::fs::remove_dir_all(&source).expect("remove the previous ISA-L copy");
    }
    copy_dir(Path::new("isa-l"), &source);

    let nasm = std::env::var("NASM").unwrap_or_else(|_| "nasm".into());
    if Command::new(&nasm).arg("-v").output().is_err() {
        panic!("building ISA-L needs nasm (Debian: apt-get install nasm)");
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let jobs = std::env::var("NUM_JOBS").unwrap_or_else(|_| "1".into());
    let status = Command::new(std::env::var("MAKE").unwrap_or_else(|_| "make".into()))
        .current_dir(&source)
        .args(["-f", "Makefile.unx", "-j", &jobs, "units=igzip", "lib"])
        .arg(format!("CC={cc}"))
        .arg(format!("AS={nasm}"))
        // The base flags of make.inc, position independent for Rust's PIE executables.
        .arg("CFLAGS_=-Wall -fPIC -fstack-protector -D_FORTIFY_SOURCE=2")
        .status()
        .expect("run make (Debian: apt-get install make)");
    assert!(status.success(), "building ISA-L with Makefile.unx failed");

    let lib = out.join("lib");
    std::fs::create_dir_all(&lib).expect("create the library directory");
    std::fs::copy(source.join("bin/isa-l.a"), lib.join("libisal.a")).expect("copy libisal.a");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=static=isal");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read the ISA-L source") {
        let entry = entry.expect("read the ISA-L source");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy the ISA-L source");
        }
    }
}
