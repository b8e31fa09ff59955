use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hoist_codec::Codec;

/// Move container images without a Docker daemon.
#[derive(Debug, Parser)]
#[command(name = "hoist", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// More log output on stderr (-v: debug for hoist, -vv: everything). `HOIST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Push the images in an image archive to a registry.
    #[command(after_help = "\
With no DEST, each image goes to the names in its RepoTags; `--registry` re-homes them.
On success one line per pushed reference goes to stdout: DEST@sha256:<manifest digest>.

Examples:
  hoist push app.tar 127.0.0.1:5000/team/app:1.0
  hoist push images.tar --registry registry.example.com/mirror")]
    Push(PushArgs),
    /// Show what an image archive holds.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The archive written by `docker save`, `podman save` or skopeo.
    pub(crate) archive: PathBuf,
    /// Where to push: `host[:port]/path/name[:tag]`, as with docker. Several are allowed.
    pub(crate) destinations: Vec<String>,
    /// Re-home RepoTags to `[http://]HOST[:PORT][/PREFIX]` when no DEST is given.
    #[arg(long, value_name = "HOST[:PORT][/PREFIX]")]
    pub(crate) registry: Option<String>,
    /// Which image of a multi-image archive to push: its 1-based number or one of its tags.
    #[arg(long, value_name = "N|NAME")]
    pub(crate) image: Option<String>,
    /// Layers to process at once.
    #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// The manifest and media-type family to push.
    #[arg(long, value_enum, default_value_t = Format::Docker)]
    pub(crate) format: Format,
    /// How to compress layers the archive stores uncompressed: `gzip[:1-9]`, `zstd[:1-19]` (needs `--format oci`)
    /// or `none`. Layers stored compressed go up as they are, unless --recompress.
    #[arg(long, value_name = "CODEC[:LEVEL]", default_value = "gzip:1")]
    pub(crate) compression: Codec,
    /// Re-encode layers the archive stores compressed with --compression, too.
    #[arg(long)]
    pub(crate) recompress: bool,
    /// Where to keep the blob cache (what each layer became when last pushed). Default: `$XDG_CACHE_HOME/hoist`.
    #[arg(long, value_name = "DIR", env = "HOIST_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Neither read nor write the blob cache (overrides --cache-dir).
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// How to show progress on stderr: bars on a terminal, periodic lines otherwise (auto), or NDJSON events.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// What to print on stdout: `REF@DIGEST` lines, or one JSON summary.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressMode {
    Auto,
    Bars,
    Plain,
    Json,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct NetworkArgs {
    /// Talk plain HTTP to every destination registry (loopback registries always are).
    #[arg(long)]
    pub(crate) plain_http: bool,
    /// Do not verify TLS certificates.
    #[arg(long)]
    pub(crate) insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Docker v2 schema 2 (what `docker push` writes).
    Docker,
    /// OCI image manifest.
    Oci,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The archive to read.
    pub(crate) archive: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}
