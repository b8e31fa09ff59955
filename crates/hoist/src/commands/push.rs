use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use hoist_archive::ArchiveInput;
use hoist_oci::{ManifestFormat, Reference, RegistryTarget};
use hoist_registry::{Connection, Credential, CredentialStore, Secret};
use hoist_transfer::{
    BlobCache, Destinations, PushError, PushOptions, PushRequest, PushRun, PushedImage, push_archive,
};

use crate::cli::{ConnectionArgs, Format, GlobalArgs, NetworkArgs, OutputFormat, PushArgs};
use crate::failure::{self, Usage};
use crate::harbor::HarborProjects;
use crate::reporter;

/// What to do after an interruption.
const AGAIN: &str = "run the same push again: blobs already in the registry are not sent twice";

pub(crate) async fn exec(args: PushArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    // Check every name before touching the archive or the network.
    let destinations = args
        .destinations
        .iter()
        .map(|d| {
            Reference::parse(d).map_err(|e| {
                Usage::new(
                    e.to_string(),
                    "write DEST as `host[:port]/path/name[:tag]`, e.g. `127.0.0.1:5000/team/app:1.0`",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = args.registry.as_deref().map(registry_target).transpose()?;
    if target.is_some() && !destinations.is_empty() {
        return Err(Usage::new(
            "--registry re-homes RepoTags and cannot be combined with DEST",
            "drop --registry, or drop DEST",
        )
        .into());
    }
    if args.archive.as_os_str() == "-" && args.network.password_stdin {
        return Err(Usage::new(
            "the archive and --password-stdin cannot both come from standard input",
            "set HOIST_PASSWORD, or give the archive as a file",
        )
        .into());
    }
    let run = PushRun::new(reporter::for_mode(args.progress, global.quiet));
    let connection = connection(&args.network.connection);
    let credentials = credentials(&args.network)?;
    let provision = HarborProjects::new(&args.provision, &connection, credentials.clone(), run.reporter())?;
    let request = PushRequest {
        input: ArchiveInput::open(&args.archive),
        destinations: Destinations { references: destinations, rehome: target, image: args.image.clone() },
        connection,
        credentials,
        options: options(&args),
        provision: Some(Arc::new(provision)),
    };
    let pushing = async { push_archive(request, &run).await.map_err(anyhow::Error::from) };
    let outcome = crate::interrupt::interruptible(&run, Box::pin(pushing), AGAIN).await;
    finish(args.output, &run, outcome)
}

/// `--registry [http://]HOST[:PORT][/PREFIX]`, as push and serve take it.
pub(crate) fn registry_target(value: &str) -> Result<RegistryTarget, Usage> {
    RegistryTarget::parse(value)
        .map_err(|e| Usage::new(e.to_string(), "write --registry as `[http://]HOST[:PORT][/PREFIX]`"))
}

/// Prints what was published — every reference, also when the push failed
/// or was interrupted — and returns the error naming what was not.
pub(crate) fn finish(
    output: OutputFormat,
    run: &PushRun,
    outcome: anyhow::Result<Vec<PushedImage>>,
) -> anyhow::Result<()> {
    let (pushed, error) = match outcome {
        Ok(pushed) => (pushed, None),
        Err(error) => (run.published(), Some(name_unpublished(error, run))),
    };
    let written = write_output(output, &pushed, error.as_ref(), run);
    match (error, written) {
        (Some(error), _) => Err(error),
        // A reader that stopped reading (`| head`) is not a failure of the push.
        (None, Err(write)) if write.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        (None, Err(write)) => Err(failure::Local {
            message: format!("cannot write the result to standard output: {write}"),
            hint: "the push itself succeeded; check where standard output goes".into(),
        }
        .into()),
        (None, Ok(())) => Ok(()),
    }
}

/// The error, saying which planned references were not published when that
/// is not already said and more than one was planned or some moved.
fn name_unpublished(error: anyhow::Error, run: &PushRun) -> anyhow::Error {
    let missing = run.not_published();
    let said = error.chain().any(|c| matches!(c.downcast_ref::<PushError>(), Some(PushError::NotPublished { .. })));
    if said || missing.is_empty() || (run.planned().len() < 2 && run.published().is_empty()) {
        return error;
    }
    let names = missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    error.context(format!("not published: {names}"))
}

fn write_output(
    output: OutputFormat,
    pushed: &[PushedImage],
    error: Option<&anyhow::Error>,
    run: &PushRun,
) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        OutputFormat::Text => {
            for image in pushed {
                writeln!(stdout, "{}@{}", image.reference, image.digest)?;
            }
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &json_document(pushed, error, run))?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()
}

/// What `--output json` prints (and `hoist serve` answers): the summary of
/// what was published, with what was not and why when the push failed.
pub(crate) fn json_document(pushed: &[PushedImage], error: Option<&anyhow::Error>, run: &PushRun) -> serde_json::Value {
    let mut document = hoist_transfer::summary(pushed);
    let created = run.created();
    if !created.is_empty() {
        document["created"] = reporter::created_json(&created);
    }
    if let Some(error) = error {
        let (_, hint) = failure::classify(error);
        let missing: Vec<String> = run.not_published().iter().map(ToString::to_string).collect();
        document["not_published"] = serde_json::json!(missing);
        document["error"] = serde_json::json!({ "message": failure::message(error.as_ref()), "hint": hint });
    }
    document
}

fn options(args: &PushArgs) -> PushOptions {
    PushOptions {
        jobs: usize::from(args.jobs),
        format: match args.format {
            Format::Docker => ManifestFormat::Docker,
            Format::Oci => ManifestFormat::Oci,
        },
        compression: args.compression,
        recompress: args.recompress,
        chunk_size: args.chunk_size,
        cache_dir: if args.no_cache { None } else { args.cache_dir.clone().or_else(BlobCache::default_dir) },
    }
}

/// Where credentials come from: `--username` with `--password-stdin` or
/// `--password`, else `HOIST_USERNAME`/`HOIST_PASSWORD`, else docker's and
/// podman's stored logins.
pub(crate) fn credentials(network: &NetworkArgs) -> anyhow::Result<CredentialStore> {
    let store = CredentialStore::from_environment();
    let password = if network.password_stdin {
        Some(password_from_stdin("--password-stdin")?)
    } else if let Some(password) = &network.password {
        eprintln!("warning: --password is visible to other users in `ps`; prefer --password-stdin or HOIST_PASSWORD");
        Some(password.clone())
    } else {
        std::env::var("HOIST_PASSWORD").ok().filter(|p| !p.is_empty())
    };
    let flags = LoginFlags { username: "--username", password: "--password-stdin (or set HOIST_PASSWORD)" };
    Ok(match login(network.username.as_deref(), password, &flags)? {
        Some(credential) => store.with_explicit(credential),
        None => store,
    })
}

/// How one set of login flags is named in messages.
pub(crate) struct LoginFlags {
    /// The user-name flag, e.g. `--username`.
    pub(crate) username: &'static str,
    /// Where a password can come from, e.g. `--password-stdin (or set HOIST_PASSWORD)`.
    pub(crate) password: &'static str,
}

/// The first line of standard input, for `flag`.
pub(crate) fn password_from_stdin(flag: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the password from stdin")?;
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Usage::new(
            format!("{flag} read an empty password"),
            format!("pipe the password in: `echo \"$PASS\" | hoist … {flag}`"),
        )
        .into());
    }
    Ok(password)
}

/// A user name with its password, both or neither.
pub(crate) fn login(
    username: Option<&str>,
    password: Option<String>,
    flags: &LoginFlags,
) -> anyhow::Result<Option<Credential>> {
    match (username.filter(|u| !u.is_empty()), password) {
        (Some(username), Some(password)) => {
            Ok(Some(Credential::Basic { username: username.to_owned(), password: Secret::new(password) }))
        }
        (Some(_), None) => {
            Err(Usage::new(format!("{} needs a password", flags.username), format!("add {}", flags.password)).into())
        }
        (None, Some(_)) => Err(Usage::new(
            format!("a password was given without {}", flags.username),
            format!("add {} USER", flags.username),
        )
        .into()),
        (None, None) => Ok(None),
    }
}

/// The network flags, as the library takes them.
pub(crate) fn connection(network: &ConnectionArgs) -> Connection {
    Connection {
        plain_http: network.plain_http,
        https: network.https,
        insecure: network.insecure,
        ca_certs: network.ca_cert.clone(),
        certs_dir: Some(network.certs_dir.clone()),
        timeout: network.timeout,
    }
}
