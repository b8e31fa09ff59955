//! Writes fixture archives for scripts: the Quick start's sample and the
//! benchmark's large archive.
//!
//! `hoist-fixture sample OUT.tar` writes a small two-layer `docker save` archive
//! tagged `hoist-sample:1.0`.

#![allow(clippy::print_stderr)] // a command-line tool

use std::path::PathBuf;
use std::process::ExitCode;

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sample", out] => {
            let text: Vec<u8> =
                (0..200_000u32).flat_map(|i| format!("line {i} of a sample file\n").into_bytes()).collect();
            let image = ImageFixture::new()
                .tag("hoist-sample:1.0")
                .layer(layer_tar(&[("etc/hoist-sample", b"pushed by hoist\n"), ("usr/share/doc/sample.txt", &text)]))
                .layer(incompressible_layer(42, 4 * 1024 * 1024));
            DockerSaveClassic::new().image(image).write_to(&PathBuf::from(out));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: hoist-fixture sample OUT.tar");
            ExitCode::from(2)
        }
    }
}
