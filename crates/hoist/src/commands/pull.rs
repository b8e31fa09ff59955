use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use hoist_archive::write::ArchiveKind;
use hoist_oci::{Platform, Reference};
use hoist_registry::Client;
use hoist_transfer::{PullOptions, PullOutput, PulledImage, Reporter};

use crate::cli::{ArchiveFormatArg, GlobalArgs, NetworkArgs, OutputFormat, PullArgs};
use crate::failure::{Interrupted, Usage};
use crate::reporter;

pub(crate) async fn exec(args: PullArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (archive, references) = args.operands.split_last().expect("clap asks for at least two operands");
    // Check every name before touching the network or the disk.
    let references = references
        .iter()
        .map(|r| {
            Reference::parse(r).map_err(|e| {
                Usage::new(e.to_string(), "write REF as `host[:port]/path/name[:tag|@sha256:…]`, e.g. `alpine:3.20`")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| Platform::parse(p).map_err(|e| Usage::new(e.to_string(), "e.g. `--platform linux/arm64`")))
        .transpose()?;
    if args.all_platforms && args.format == ArchiveFormatArg::Docker {
        return Err(Usage::new(
            "--all-platforms keeps whole indexes, which only an OCI archive holds",
            "add `--format oci`, or choose one platform with `--platform`",
        )
        .into());
    }
    let to_stdout = archive == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Usage::new(
            "standard output is a terminal; an image archive is not for reading there",
            "redirect it: `hoist pull REF - > app.tar`, or `hoist pull REF - | docker load`",
        )
        .into());
    }
    let path = PathBuf::from(archive);
    if !to_stdout && path.is_dir() {
        return Err(Usage::new(
            format!("`{archive}` is a directory"),
            "name the archive file to write, e.g. `app.tar`",
        )
        .into());
    }
    let credentials = crate::commands::push::credentials(&args.network)?;
    let reporter = reporter::for_mode(args.progress, global.quiet);
    let client = client(&args.network, &references, credentials, &reporter)?;
    let options = PullOptions {
        jobs: usize::from(args.jobs),
        kind: match args.format {
            ArchiveFormatArg::Docker => ArchiveKind::Docker,
            ArchiveFormatArg::Oci => ArchiveKind::Oci,
        },
        platform,
        all_platforms: args.all_platforms,
        verify: args.verify,
    };
    let output = if to_stdout {
        // The descriptor itself, not Rust's line-buffered `Stdout`, which
        // would look for newlines in every layer.
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        PullOutput::Stream(Box::new(std::fs::File::from(fd)))
    } else {
        PullOutput::File(path)
    };
    let pulling = hoist_transfer::pull(&client, &references, &options, output, Arc::clone(&reporter));
    // On a signal the pull is dropped, which removes its unfinished archive.
    let pulled = tokio::select! {
        pulled = pulling => pulled.map_err(anyhow::Error::from),
        signal = crate::interrupt::signal() => {
            let cleaned = if to_stdout { "the archive on standard output is incomplete" } else { "the unfinished archive was removed" };
            Err(Interrupted { signal, cleaned: cleaned.into(), hint: "run the same pull again" }.into())
        }
    };
    let pulled = pulled?;

    // Results go to stdout, unless the archive went there.
    let mut results: Box<dyn Write> =
        if to_stdout { Box::new(std::io::stderr().lock()) } else { Box::new(std::io::stdout().lock()) };
    let written = match args.output {
        OutputFormat::Text => {
            pulled.iter().try_for_each(|image| writeln!(results, "{}@{}", image.reference, image.digest))
        }
        OutputFormat::Json => serde_json::to_writer_pretty(&mut results, &summary(archive, &args, &pulled))
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(results)),
    };
    match written {
        // A reader that stopped reading the results (`| head`) is not a failure of the pull.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(crate::failure::Local {
            message: format!("cannot write the result: {error}"),
            hint: "the pull itself succeeded; check where the output goes".into(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// The registry client for `references`: plain HTTP or HTTPS per flags,
/// credentials, TLS material, time limits.
pub(crate) fn client(
    network: &NetworkArgs,
    references: &[Reference],
    credentials: hoist_registry::CredentialStore,
    reporter: &Arc<dyn Reporter>,
) -> anyhow::Result<Client> {
    let connection = crate::commands::push::connection(&network.connection);
    let registries = references.iter().map(|r| r.registry().to_owned());
    Ok(hoist_transfer::registry_client(&connection, registries, credentials, None, reporter)?)
}

/// The `--output json` document.
fn summary(archive: &str, args: &PullArgs, pulled: &[PulledImage]) -> serde_json::Value {
    let images: Vec<_> = pulled
        .iter()
        .map(|image| {
            let blobs: Vec<_> = image
                .blobs
                .iter()
                .map(|blob| {
                    let mut value = serde_json::json!({
                        "digest": blob.digest,
                        "media_type": blob.media_type,
                        "size": blob.size,
                    });
                    if let Some(from) = &blob.decompressed_from {
                        value["decompressed_from"] = serde_json::json!(from);
                    }
                    value
                })
                .collect();
            serde_json::json!({
                "reference": image.reference.to_string(),
                "digest": image.digest,
                "media_type": image.media_type,
                "platform": image.platform.as_ref().map(ToString::to_string),
                "pulled": format!("{}@{}", image.reference, image.digest),
                "blobs": blobs,
            })
        })
        .collect();
    let format = match args.format {
        ArchiveFormatArg::Docker => "docker",
        ArchiveFormatArg::Oci => "oci",
    };
    serde_json::json!({ "archive": archive, "format": format, "images": images })
}
