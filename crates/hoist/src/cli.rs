use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hoist_codec::Codec;

/// Move container images without a Docker daemon.
#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HOIST_COMMIT"), ")"),
    about,
    propagate_version = true,
    after_help = "\
Examples, one per command:
  hoist push app.tar registry.example.com/team/app:1.0   push the image in app.tar there
  hoist pull registry.example.com/team/app:1.0 app.tar   write it to an archive `docker load` reads
  hoist copy registry.example.com/team/app:1.0 other.example.com/app:1.0   copy it, digests kept
  hoist inspect app.tar                                  list its images, tags and layers
  hoist login -u ci --password-stdin registry.example.com   check a login, store it as docker does
  hoist logout registry.example.com                      forget it
  hoist serve --registry registry.example.com            a web page and API that push uploaded archives
  hoist completions bash > ~/.local/share/bash-completion/completions/hoist

`hoist help COMMAND` tells more about each."
)]
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
    /// Print only results and errors (push, pull, copy: no progress).
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing would only obscure clap's derive
pub(crate) enum Command {
    /// Push the images in an image archive to a registry.
    #[command(after_help = "\
With no DEST, each image goes to the names in its RepoTags; `--registry` re-homes them.
On success one line per pushed reference goes to stdout: DEST@sha256:<manifest digest>.
On Harbor (told by its /v2/ challenge), a project that does not exist is created first, private
unless --public (not with --no-create); an account that may not create projects gets an error naming it.

Examples:
  hoist push app.tar 127.0.0.1:5000/team/app:1.0
  hoist push images.tar --registry registry.example.com/mirror
  docker save app:1 | hoist push - registry.example.com/team/app:1")]
    Push(PushArgs),
    /// Show what an image archive holds.
    #[command(after_help = "\
Reads every `docker save` layout (before and after Docker 25), podman/skopeo docker-archive and OCI layouts.
A seekable plain tar is indexed by its headers; `-` and compressed archives are read in one streaming pass.

Examples:
  hoist inspect app.tar
  docker save app:1 | hoist inspect --json --verify -")]
    Inspect(InspectArgs),
    /// Pull images from registries into one archive (`docker load` reads it).
    #[command(
        override_usage = "hoist pull [OPTIONS] <REF>... <ARCHIVE|->",
        after_help = "\
The archive is what `docker save` of Docker 25+ writes: an OCI image layout plus manifest.json and
repositories, which `docker load` of every Docker version reads (--format oci: the OCI layout alone).
Layers keep the registry's bytes and digests. From an index, this machine's platform is taken.
On success one line per reference goes to stdout: REF@sha256:<manifest digest> (to stderr when the
archive goes to stdout).

Examples:
  hoist pull registry.example.com/team/app:1.0 app.tar
  hoist pull 127.0.0.1:5000/app@sha256:… - | docker load
  hoist pull --platform linux/arm64 --format oci quay.io/x/y:2 y.tar"
    )]
    Pull(PullArgs),
    /// Copy an image from one registry to another, every digest kept.
    #[command(after_help = "\
Manifests, indexes and manifest lists go up byte for byte, so DEST's digest is SRC's: a whole
index by default (every platform, attestations included), one platform's with --platform. Blobs
stream from a GET on SRC into an upload to DEST, hashed and checked on the way; nothing is staged.
Inside one registry every blob is mounted; across registries, blobs DEST has are skipped.
Credentials come from docker's and podman's logins per host, or --src-*/--dest-* (--username: both).
On success one line per tag moved goes to stdout: DEST@sha256:<digest>.

Examples:
  hoist copy registry-a.example.com/team/app:1.0 registry-b.example.com/prod/app:1.0
  hoist copy --platform linux/arm64 docker.io/library/alpine:3.20 127.0.0.1:5000/alpine:3.20
  echo \"$TOKEN\" | hoist copy --dest-username ci --dest-password-stdin SRC DEST")]
    Copy(CopyArgs),
    /// Log in to a registry: check the credentials, then store them as `docker login` does.
    #[command(
        mut_arg("username", |a| a.help("The user name to log in as (required; HOIST_USERNAME works too)")),
        mut_arg("password_stdin", |a| a.help("Read the password (or access token) from standard input")),
        after_help = "\
REGISTRY is host[:port] (a URL such as https://host:5000/ works too); Docker Hub when left out.
The credentials are checked against the registry first (a token for no scope, or GET /v2/ with them),
then stored in $DOCKER_CONFIG/config.json (or ~/.docker/config.json): through the credential helper
that file names for the registry (credHelpers, credsStore), else in its `auths`, readable by the user
only. Every hoist command, docker, podman and skopeo then use them.

Examples:
  echo \"$TOKEN\" | hoist login --username ci-bot --password-stdin registry.example.com
  hoist login -u 'robot$ci' --password-stdin harbor.example.com < robot-secret.txt"
    )]
    Login(LoginArgs),
    /// Remove a registry's stored login, as `docker logout` does.
    #[command(after_help = "\
REGISTRY is host[:port]; Docker Hub when left out. The login is removed from the credential helper
config.json names for it, and from the file's `auths` under every spelling docker used for it.

Example:
  hoist logout registry.example.com")]
    Logout(LogoutArgs),
    /// Serve a web page and HTTP API that push uploaded archives into the registries named.
    #[command(after_help = "\
The archive is the raw request body, streamed into the registry as it arrives (no copy on disk when
dest= names the target). The uploader's HTTP basic credentials go to the registry for that push
only; only the --registry registries can be targets; requests from other sites' pages are refused.
On Harbor, a missing project is created with the uploader's credentials (private unless --public).
The answer is the JSON of `hoist push --output json`. GET / is the upload page, GET /healthz the
health check. SIGTERM or Ctrl-C stops accepting, lets uploads in flight finish (--shutdown-grace),
then cancels the rest.

Examples:
  hoist serve --registry harbor.example.com --listen 0.0.0.0:8080
  curl -u alice -T app.tar 'http://127.0.0.1:8080/api/push?dest=harbor.example.com/team/app:1.0'
  docker save app:1 | curl -u alice -T - 'http://127.0.0.1:8080/api/push?dest=harbor.example.com/team/app:1'")]
    Serve(ServeArgs),
    /// Print the completion script for a shell.
    #[command(after_help = "\
Examples:
  hoist completions bash > ~/.local/share/bash-completion/completions/hoist
  hoist completions zsh > ~/.zfunc/_hoist      # with `fpath+=(~/.zfunc)` in ~/.zshrc
  hoist completions fish > ~/.config/fish/completions/hoist.fish")]
    Completions(CompletionsArgs),
    /// Write a man page for hoist and one for each command into DIR (for packaging).
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

impl Command {
    /// How the command shows progress, for those that do.
    pub(crate) fn progress(&self) -> Option<ProgressMode> {
        match self {
            Self::Push(args) => Some(args.progress),
            Self::Pull(args) => Some(args.progress),
            Self::Copy(args) => Some(args.progress),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A registry uploads may go to: `[http://]HOST[:PORT][/PREFIX]` (repeatable). The first takes archives
    /// pushed without `dest=`, their RepoTags re-homed there as `hoist push --registry` does.
    #[arg(long = "registry", value_name = "REGISTRY", required = true)]
    pub(crate) registries: Vec<String>,
    /// Where to listen.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080", env = "HOIST_LISTEN")]
    pub(crate) listen: String,
    /// A host name the service is reached by (repeatable; a reverse proxy's public name). Requests naming any
    /// other host are refused (DNS rebinding); IP addresses and localhost always work.
    #[arg(long = "public-name", value_name = "HOST")]
    pub(crate) public_names: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Refuse an upload larger than this (`20G`, `512M`; `0`: no limit) with 413.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size_or_zero)]
    pub(crate) max_size: u64,
    /// Uploads pushed at once; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) max_uploads: u16,
    /// Give up on an upload whose client sends nothing for this long (`60`, `5m`).
    #[arg(long, value_name = "SECONDS", default_value = "5m", value_parser = parse_seconds)]
    pub(crate) idle_timeout: std::time::Duration,
    /// On SIGTERM or Ctrl-C, how long uploads in flight may go on before they are cancelled.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub(crate) shutdown_grace: std::time::Duration,
    /// Layers processed at once per upload.
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// What layers stored uncompressed in the archive become: gzip[:1-9] or none (images go up in Docker's
    /// format, which has no zstd layers).
    #[arg(long, value_name = "CODEC[:LEVEL]", default_value = "gzip:2")]
    pub(crate) compression: Codec,
    /// Send each layer to the registry in chunks of this size (`4M`); an upload keeps a few for resending, so
    /// smaller chunks hold less memory per upload, at more requests.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) chunk_size: Option<u64>,
    #[command(flatten)]
    pub(crate) provision: ProvisionArgs,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The registry: host[:port]. Docker Hub when left out.
    #[arg(value_name = "REGISTRY")]
    pub(crate) registry: Option<String>,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// The registry: host[:port]. Docker Hub when left out.
    #[arg(value_name = "REGISTRY")]
    pub(crate) registry: Option<String>,
}

/// What to do about a destination that must exist before anything is
/// pushed into it (a Harbor project).
#[derive(Clone, Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Create a Harbor project that does not exist as public (anyone may pull), not private.
    #[arg(long, conflicts_with = "no_create")]
    pub(crate) public: bool,
    /// Never create a Harbor project: a push into one that does not exist fails, naming it, before any blob.
    #[arg(long)]
    pub(crate) no_create: bool,
    /// Reach Harbor's API with a login session (POST /c/login, a cookie and its CSRF token) instead of Basic
    /// auth, for deployments whose front end refuses Basic on /api/.
    #[arg(long)]
    pub(crate) harbor_session: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManpagesArgs {
    /// Where to write `hoist.1`, `hoist-push.1`, …; made if missing.
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The images to pull (`host[:port]/path/name[:tag|@digest]`, as with docker), then the archive to
    /// write, or `-` for standard output.
    #[arg(value_name = "REF|ARCHIVE", num_args = 2.., required = true)]
    pub(crate) operands: Vec<String>,
    /// What to write: an archive `docker load` reads (an OCI layout plus manifest.json), or a pure OCI layout.
    #[arg(long, value_enum, default_value_t = ArchiveFormatArg::Docker)]
    pub(crate) format: ArchiveFormatArg,
    /// The platform to take from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Keep every platform of a multi-platform image: the whole index (needs --format oci).
    #[arg(long, conflicts_with = "platform")]
    pub(crate) all_platforms: bool,
    /// Blobs to download at once.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// Also decompress every layer as it arrives and check it against the config's diff_id.
    #[arg(long)]
    pub(crate) verify: bool,
    /// How to show progress on stderr: bars on a terminal, periodic lines otherwise (auto), or NDJSON events.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// What to print: `REF@DIGEST` lines, or one JSON summary.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The image to copy: `host[:port]/path/name[:tag|@digest]`, as with docker.
    #[arg(value_name = "SRC")]
    pub(crate) source: String,
    /// Where to: `host[:port]/path/name[:tag]`.
    #[arg(value_name = "DEST")]
    pub(crate) destination: String,
    /// Copy only this platform's image of a multi-platform index (its digest kept). Default: the whole index.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Also copy the artifacts that refer to the image (signatures, SBOMs, attestations), found through the
    /// referrers API or the `sha256-<digest>` tags.
    #[arg(long)]
    pub(crate) referrers: bool,
    /// Blobs to copy at once (each on its own connections).
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// Upload blobs in chunks of SIZE bytes (`8MiB`, `512k`, …) instead of one request each.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) chunk_size: Option<u64>,
    /// How to show progress on stderr: bars on a terminal, periodic lines otherwise (auto), or NDJSON events.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// What to print on stdout: `DEST@DIGEST` lines, or one JSON summary.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) logins: CopyLogins,
    #[command(flatten)]
    pub(crate) provision: ProvisionArgs,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

/// Credentials for each side of a copy; each wins over `--username` and the stored logins.
#[derive(Debug, Args)]
#[allow(clippy::struct_field_names)] // the flags' own names
pub(crate) struct CopyLogins {
    /// SRC's registry: `USER[:PASSWORD]` (as skopeo's; a password here shows in `ps`); wins over
    /// --src-username. Without `:PASSWORD`, the password comes as for --src-username.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub(crate) src_creds: Option<String>,
    /// User name for SRC's registry; the password from --src-password-stdin, --src-password-file or
    /// HOIST_SRC_PASSWORD.
    #[arg(long, value_name = "USER", env = "HOIST_SRC_USERNAME")]
    pub(crate) src_username: Option<String>,
    /// Read SRC's password from standard input.
    #[arg(long, conflicts_with = "src_password_file")]
    pub(crate) src_password_stdin: bool,
    /// Read SRC's password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) src_password_file: Option<PathBuf>,
    /// DEST's registry: `USER[:PASSWORD]`, as --src-creds; wins over --dest-username.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub(crate) dest_creds: Option<String>,
    /// User name for DEST's registry; the password from --dest-password-stdin, --dest-password-file or
    /// HOIST_DEST_PASSWORD.
    #[arg(long, value_name = "USER", env = "HOIST_DEST_USERNAME")]
    pub(crate) dest_username: Option<String>,
    /// Read DEST's password from standard input.
    #[arg(long, conflicts_with = "dest_password_file")]
    pub(crate) dest_password_stdin: bool,
    /// Read DEST's password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) dest_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ArchiveFormatArg {
    /// What `docker save` of Docker 25+ writes: an OCI layout plus manifest.json and repositories.
    Docker,
    /// A pure OCI image layout, keeping the registry's manifests (and, with --all-platforms, indexes).
    Oci,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The archive written by `docker save`, `podman save` or skopeo, or `-` for standard input.
    /// gzip-, zstd- and xz-wrapped archives are read as they are, in one pass.
    pub(crate) archive: PathBuf,
    /// Where to push: `host[:port]/path/name[:tag]`, as with docker. Several are allowed.
    #[arg(value_name = "DEST")]
    pub(crate) destinations: Vec<String>,
    /// Re-home RepoTags to `[http://|https://]HOST[:PORT][/PREFIX]` when no DEST is given.
    #[arg(long, value_name = "HOST[:PORT][/PREFIX]")]
    pub(crate) registry: Option<String>,
    /// Which image of a multi-image archive to push: its 1-based number or one of its tags.
    #[arg(long, value_name = "N|NAME")]
    pub(crate) image: Option<String>,
    /// Layers to process at once (each on its own connection; a big layer also uses every core).
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// The manifest and media-type family to push.
    #[arg(long, value_enum, default_value_t = Format::Docker)]
    pub(crate) format: Format,
    /// How to compress layers the archive stores uncompressed: `gzip[:1-9]`, `zstd[:1-19]` (needs `--format oci`)
    /// or `none`. Layers stored compressed go up as they are, unless --recompress.
    #[arg(long, value_name = "CODEC[:LEVEL]", default_value = "gzip:2")]
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
    /// Upload layers in chunks of SIZE bytes (`8MiB`, `512k`, …) instead of one streamed request each.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) chunk_size: Option<u64>,
    #[command(flatten)]
    pub(crate) provision: ProvisionArgs,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

/// `1048576`, `1024k`, `1M`, `1MiB`, `1mb`: binary multiples.
fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{value}` is not a size such as 8MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(format!("`{value}` has an unknown unit; use k, M or G")),
    };
    number
        .checked_shl(shift)
        .filter(|size| *size > 0 && size >> shift == number)
        .ok_or_else(|| format!("`{value}` is out of range"))
}

/// [`parse_size`], or `0` for no limit.
fn parse_size_or_zero(value: &str) -> Result<u64, String> {
    if value.trim() == "0" { Ok(0) } else { parse_size(value) }
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
#[allow(clippy::struct_excessive_bools)] // each bool is an independent command-line switch
pub(crate) struct NetworkArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// User name for the registries named (a copy's SRC and DEST both). Without it, docker's and podman's stored
    /// logins are used.
    #[arg(short, long, value_name = "USER", env = "HOIST_USERNAME")]
    pub(crate) username: Option<String>,
    /// Read the password (or access token) from standard input.
    #[arg(long, conflicts_with = "password")]
    pub(crate) password_stdin: bool,
    /// The password on the command line: other users can see it in `ps`. Prefer --password-stdin or HOIST_PASSWORD.
    #[arg(long, value_name = "PASSWORD")]
    pub(crate) password: Option<String>,
}

/// How to reach registries: the scheme, TLS trust and timeouts.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// Talk plain HTTP to every registry named (loopback registries are by default).
    #[arg(long, conflicts_with = "https")]
    pub(crate) plain_http: bool,
    /// Talk HTTPS even to loopback registries (which otherwise get plain HTTP, as with docker).
    #[arg(long)]
    pub(crate) https: bool,
    /// Do not verify TLS certificates.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Also trust the CA certificates in this PEM file (may hold several; repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Vec<PathBuf>,
    /// Docker's per-registry TLS directory: DIR/HOST:PORT/*.crt (CAs), NAME.cert + NAME.key (mTLS).
    #[arg(long, value_name = "DIR", env = "HOIST_CERTS_D", default_value = "/etc/docker/certs.d")]
    pub(crate) certs_dir: PathBuf,
    /// Give up on a request that makes no progress for this long (`30`, `30s`, `2m`); retrying one request
    /// stops after four times this.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds, env = "HOIST_TIMEOUT")]
    pub(crate) timeout: std::time::Duration,
}

/// `30`, `30s`, `2m`: a duration in whole seconds or minutes, at least one second.
fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    let value = value.trim();
    let (number, factor) = match value.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (value.strip_suffix('s').unwrap_or(value), 1),
    };
    let seconds: u64 = number.trim().parse().map_err(|_| format!("`{value}` is not a number of seconds such as 30"))?;
    match seconds.checked_mul(factor) {
        Some(seconds) if (1..=86_400).contains(&seconds) => Ok(std::time::Duration::from_secs(seconds)),
        _ => Err(format!("`{value}` is out of range (1 second to 24 hours)")),
    }
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
    /// The archive to read, or `-` for standard input. gzip, zstd and xz wrappers are recognised.
    pub(crate) archive: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Hash every layer (decompressed if stored compressed) and check it against its diff_id.
    #[arg(long)]
    pub(crate) verify: bool,
}

#[cfg(test)]
mod tests {
    use super::{parse_seconds, parse_size};
    use std::time::Duration;

    #[test]
    fn timeouts_take_seconds_or_minutes() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("99999999999999999m").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
