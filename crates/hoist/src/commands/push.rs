use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hoist_archive::{Archive, Image, Wrapper};
use hoist_oci::{ManifestFormat, Reference, RegistryTarget};
use hoist_registry::{Client, ClientOptions, Credential, CredentialStore, RetryPolicy, Secret};
use hoist_transfer::{BlobCache, Hold, PushError, PushOptions, PushPlan, PushRun, PushedImage, Reporter, read_stream};

use crate::cli::{Format, GlobalArgs, NetworkArgs, OutputFormat, ProgressMode, PushArgs};
use crate::failure::{self, Usage};
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
    let target = args
        .registry
        .as_deref()
        .map(|r| {
            RegistryTarget::parse(r)
                .map_err(|e| Usage::new(e.to_string(), "write --registry as `[http://]HOST[:PORT][/PREFIX]`"))
        })
        .transpose()?;
    if args.format == Format::Docker && args.compression.media_type_suffix() == Some("zstd") {
        return Err(Usage::new(
            "zstd layers exist only in OCI images, and --format is docker",
            "add `--format oci`, or use `--compression gzip`",
        )
        .into());
    }
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
    let credentials = credentials(&args.network)?;
    let options = options(&args);
    let run = PushRun::new(reporter::for_mode(args.progress, global.quiet));
    let push = Push { args: &args, destinations, target: target.as_ref(), credentials, options: &options, run: &run };
    let outcome = crate::interrupt::interruptible(&run, Box::pin(push.run()), AGAIN).await;
    finish(args.progress, args.output, &run, outcome)
}

/// Prints what was published — every reference, also when the push failed
/// or was interrupted — and returns the error naming what was not.
pub(crate) fn finish(
    progress: ProgressMode,
    output: OutputFormat,
    run: &PushRun,
    outcome: anyhow::Result<Vec<PushedImage>>,
) -> anyhow::Result<()> {
    let (pushed, error) = match outcome {
        Ok(pushed) => (pushed, None),
        Err(error) => (run.published(), Some(name_unpublished(error, run))),
    };
    if let Some(error) = &error
        && progress == ProgressMode::Json
    {
        let (_, hint) = failure::classify(error);
        reporter::emit_error(&failure::message(error.as_ref()), hint.as_deref());
    }
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
            let mut document = summary(pushed);
            if let Some(error) = error {
                let (_, hint) = failure::classify(error);
                let missing: Vec<String> = run.not_published().iter().map(ToString::to_string).collect();
                document["not_published"] = serde_json::json!(missing);
                document["error"] = serde_json::json!({ "message": failure::message(error.as_ref()), "hint": hint });
            }
            serde_json::to_writer_pretty(&mut stdout, &document)?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()
}

/// One push, from flags to the library calls.
struct Push<'a> {
    args: &'a PushArgs,
    destinations: Vec<Reference>,
    target: Option<&'a RegistryTarget>,
    credentials: CredentialStore,
    options: &'a PushOptions,
    run: &'a PushRun,
}

impl Push<'_> {
    async fn run(self) -> anyhow::Result<Vec<PushedImage>> {
        // Every registry named here answers `GET /v2/` before the archive is
        // read: a mistyped or unreachable one is the first thing said.
        let mut named = self.destinations.clone();
        named.extend(self.target.map(|t| Reference::from_parts(t.registry(), "v2", None)).transpose()?);
        if !named.is_empty() {
            let named = [PushPlan { image: 0, destinations: named }];
            let client = client(self.args, &named, self.target, self.credentials.clone(), self.run.reporter())?;
            check_registries(&client, &named).await?;
        }
        // `-` and wrapped archives cannot seek: they are read in one pass.
        let input: Option<Box<dyn std::io::Read + Send>> = if self.args.archive.as_os_str() == "-" {
            Some(Box::new(std::io::stdin()))
        } else {
            // A file that cannot be opened gets its error from `Archive::open`.
            std::fs::File::open(&self.args.archive).ok().and_then(|mut file| {
                let wrapped = Wrapper::sniff_file(&mut file).is_ok_and(|w| w != Wrapper::None);
                wrapped.then(|| Box::new(file) as Box<dyn std::io::Read + Send>)
            })
        };
        if let Some(input) = input {
            return self.streamed(input).await;
        }
        let path = self.args.archive.clone();
        let archive =
            tokio::task::spawn_blocking(move || Archive::open(path)).await.context("reading the archive")??;
        let archive = Arc::new(archive);
        let unchecked = self.destinations.is_empty() && self.target.is_none();
        let plans = plan(archive.images(), archive.path(), self.args, self.destinations, self.target)?;
        let client = client(self.args, &plans, self.target, self.credentials, self.run.reporter())?;
        // The destinations were the archive's RepoTags: checked once known.
        if unchecked {
            check_registries(&client, &plans).await?;
        }
        Ok(hoist_transfer::push(Arc::clone(&archive), &client, &plans, self.options, self.run).await?)
    }

    /// A push from an input read once, front to back.
    async fn streamed(self, input: Box<dyn std::io::Read + Send>) -> anyhow::Result<Vec<PushedImage>> {
        let Self { args, destinations, target, credentials, options, run } = self;
        let early = if destinations.is_empty() {
            Vec::new()
        } else {
            vec![PushPlan { image: 0, destinations: destinations.clone() }]
        };
        let client = client(args, &early, target, credentials, run.reporter())?;
        // Sessions in the first DEST's repository, when every DEST can mount from it.
        let hold = match destinations.first() {
            Some(first) if destinations.iter().all(|d| d.registry() == first.registry()) => {
                Hold::Session(first.clone())
            }
            _ => Hold::Stage(None),
        };
        let unchecked = destinations.is_empty() && target.is_none();
        let streamed = read_stream(input, args.archive.clone(), &client, hold, options, run).await?;
        let planned = async {
            let plans = plan(streamed.images(), streamed.archive().label(), args, destinations, target)?;
            if unchecked {
                check_registries(&client, &plans).await?;
            }
            anyhow::Ok(plans)
        };
        let plans = match planned.await {
            Ok(plans) => plans,
            Err(error) => {
                streamed.abandon().await;
                return Err(error);
            }
        };
        Ok(streamed.push(&client, &plans, options, run).await?)
    }
}

/// Asks each distinct registry of `plans` for `/v2/` (see [`Client::check_registry`]).
async fn check_registries(client: &Client, plans: &[PushPlan]) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    for reference in plans.iter().flat_map(|p| &p.destinations) {
        if !seen.contains(&reference.registry()) {
            seen.push(reference.registry());
            client.check_registry(reference).await?;
        }
    }
    Ok(())
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

/// The registry client for this push: which registries get plain HTTP or
/// HTTPS, credentials, TLS material and time limits.
fn client(
    args: &PushArgs,
    plans: &[PushPlan],
    target: Option<&RegistryTarget>,
    credentials: CredentialStore,
    reporter: &Arc<dyn Reporter>,
) -> anyhow::Result<Client> {
    let mut plain_http: Vec<String> = Vec::new();
    if args.network.plain_http {
        plain_http.extend(plans.iter().flat_map(|p| &p.destinations).map(|d| d.registry().to_owned()));
    }
    if let Some(target) = target.filter(|t| t.plain_http()) {
        plain_http.push(target.registry().to_owned());
    }
    let mut https: Vec<String> = Vec::new();
    if args.network.https {
        https.extend(plans.iter().flat_map(|p| &p.destinations).map(|d| d.registry().to_owned()));
    }
    if let Some(target) = target.filter(|_| args.registry.as_deref().is_some_and(|r| r.starts_with("https://"))) {
        https.push(target.registry().to_owned());
    }
    let timeout = args.network.timeout;
    Ok(Client::new(ClientOptions {
        plain_http,
        https,
        insecure: args.network.insecure,
        user_agent: None,
        credentials,
        ca_certs: args.network.ca_cert.clone(),
        certs_dir: Some(args.network.certs_dir.clone()),
        on_retry: Some(hoist_transfer::retry_observer(reporter)),
        retry: RetryPolicy { max_elapsed: timeout * 4, ..RetryPolicy::default() },
        timeout,
    })?)
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

/// The `--output json` document.
fn summary(pushed: &[PushedImage]) -> serde_json::Value {
    let images: Vec<_> = pushed
        .iter()
        .map(|image| {
            let blobs: Vec<_> = image
                .blobs
                .iter()
                .map(|blob| {
                    serde_json::json!({
                        "digest": blob.digest,
                        "media_type": blob.media_type,
                        "size": blob.size,
                        "action": blob.action.name(),
                        "seconds": (blob.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                        "compression": blob.compression,
                        "bytes_sent": blob.bytes_sent,
                        "retries": blob.retries,
                    })
                })
                .collect();
            serde_json::json!({
                "reference": image.reference.to_string(),
                "digest": image.digest,
                "pushed": format!("{}@{}", image.reference, image.digest),
                "blobs": blobs,
            })
        })
        .collect();
    serde_json::json!({ "images": images })
}

/// Decides which image goes where.
fn plan(
    images: &[Image],
    label: &Path,
    args: &PushArgs,
    destinations: Vec<Reference>,
    target: Option<&RegistryTarget>,
) -> anyhow::Result<Vec<PushPlan>> {
    let chosen: Vec<usize> = match &args.image {
        Some(choice) => vec![choose_image(images, choice)?],
        None => (0..images.len()).collect(),
    };
    if !destinations.is_empty() {
        if chosen.len() > 1 {
            return Err(Usage::new(
                format!("`{}` holds {} images; a DEST names one", label.display(), chosen.len()),
                "choose one with `--image N` or `--image TAG`, or give no DEST to push every image to its RepoTags",
            )
            .into());
        }
        return Ok(vec![PushPlan { image: chosen[0], destinations }]);
    }
    chosen
        .into_iter()
        .map(|index| {
            let tags = &images[index].tags;
            if tags.is_empty() {
                return Err(Usage::new(
                    format!("image {} in `{}` has no RepoTags, so it has no destination", index + 1, label.display()),
                    "name one: `hoist push ARCHIVE HOST/REPOSITORY:TAG`",
                )
                .into());
            }
            let destinations = tags
                .iter()
                .map(|tag| {
                    let reference =
                        Reference::parse(tag).with_context(|| format!("RepoTag `{tag}` of image {}", index + 1))?;
                    match target {
                        Some(target) => Ok(target.rehome(&reference)?),
                        None => Ok(reference),
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(PushPlan { image: index, destinations })
        })
        .collect()
}

fn choose_image(images: &[Image], choice: &str) -> anyhow::Result<usize> {
    if let Ok(number) = choice.parse::<usize>() {
        if (1..=images.len()).contains(&number) {
            return Ok(number - 1);
        }
        return Err(Usage::new(
            format!("--image {number}: the archive holds {} images", images.len()),
            "number images from 1; `hoist inspect ARCHIVE` lists them",
        )
        .into());
    }
    images.iter().position(|image| image.tags.iter().any(|t| t == choice)).ok_or_else(|| {
        Usage::new(
            format!("no image in the archive is tagged `{choice}`"),
            "`hoist inspect ARCHIVE` lists the images and their tags",
        )
        .into()
    })
}
