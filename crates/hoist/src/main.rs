//! The `hoist` command: flags in, one library call out, results on stdout,
//! everything else on stderr.

#![allow(clippy::print_stderr)] // the binary is where output belongs

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

// glibc's heap fragments under one allocation pattern hoist has: a
// decompressor's state (32-128 KiB) made and dropped per blob between small
// allocations that stay. Streaming --verify over 25,000 small gzip entries
// grew to 340 MiB with it; with mimalloc, bench/archive.sh's streaming
// --verify over 50,727 entries peaks at 29 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc asks the kernel for transparent huge pages, and with THP in its
// common `madvise` mode every block buffer then pins a 2 MiB page: peak memory
// of a default push went from 36 MiB to 69 MiB, for no measurable speed
// (bench/README.md, "Memory"). The flag applies to mappings already made too.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    // Failure (an old kernel) only leaves memory as it was.
    // prctl is variadic and the kernel reads unsigned longs: pass exactly those.
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

mod cli;
mod commands;
mod failure;
mod harbor;
mod interrupt;
mod reporter;
mod serve;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { failure::usage_exit() } else { ExitCode::SUCCESS };
        }
    };
    // With NDJSON progress, log lines and the final error are events too:
    // stderr stays one JSON object per line.
    let json = cli.command.progress() == Some(cli::ProgressMode::Json);
    init_tracing(cli.global.verbose, json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return failure::report(&anyhow::Error::from(error)),
    };
    let result = runtime.block_on(commands::run(cli));
    // Threads still blocked reading an input (a stdin that never ends after
    // a signal) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if json => failure::report_as_event(&error),
        Err(error) => failure::report(&error),
    }
}

fn init_tracing(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "warn",
        1 => {
            "info,hoist=debug,hoist_transfer=debug,hoist_registry=debug,hoist_http=debug,hoist_harbor=debug,hoist_archive=debug"
        }
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG").unwrap_or_else(|_| default.into());
    // no-color.org: a NO_COLOR that is set and not empty.
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.with_ansi(false).event_format(JsonEvent).init();
    } else {
        builder.with_ansi(color).event_format(LevelPrefix).init();
    }
}

/// Log lines as NDJSON events: `{"event":"warning","message":…}`, or
/// `"log"` with its `level` for the rest (`error` is kept for the failure).
struct JsonEvent;

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut message = String::new();
        ctx.field_format().format_fields(Writer::new(&mut message), event)?;
        let level = *event.metadata().level();
        // An `error` event is the command's failure (with its hint); a
        // log line at ERROR level is a log event like the rest.
        let line = if level == Level::WARN {
            serde_json::json!({ "event": "warning", "message": message })
        } else {
            serde_json::json!({ "event": "log", "level": level.as_str().to_ascii_lowercase(), "message": message })
        };
        writeln!(writer, "{line}")
    }
}

/// Log lines as `warning: …`, like the `error: …` of a failure, rather than
/// tracing's `WARN …`.
struct LevelPrefix;

impl<S, N> FormatEvent<S, N> for LevelPrefix
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let (label, color) = match *event.metadata().level() {
            Level::ERROR => ("error", "1;31"),
            Level::WARN => ("warning", "1;33"),
            Level::INFO => ("info", "1;36"),
            Level::DEBUG => ("debug", "2"),
            Level::TRACE => ("trace", "2"),
        };
        if writer.has_ansi_escapes() {
            write!(writer, "\x1b[{color}m{label}:\x1b[0m ")?;
        } else {
            write!(writer, "{label}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
