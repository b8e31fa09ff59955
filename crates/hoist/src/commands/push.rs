use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use std::path::Path;

use hoist_archive::{Archive, Image, Wrapper};
use hoist_oci::{ManifestFormat, Reference, RegistryTarget};
use hoist_registry::{Client, ClientOptions, Credential, CredentialStore, Secret};
use hoist_transfer::{BlobCache, Hold, PushOptions, PushPlan, PushedImage, Reporter, read_stream};

use crate::cli::{Format, GlobalArgs, NetworkArgs, OutputFormat, ProgressMode, PushArgs};
use crate::failure::Usage;
use crate::reporter;

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

    let stdin = args.archive.as_os_str() == "-";
    if stdin && args.network.password_stdin {
        return Err(Usage::new(
            "the archive and --password-stdin cannot both come from standard input",
            "set HOIST_PASSWORD, or give the archive as a file",
        )
        .into());
    }
    let credentials = credentials(&args.network)?;
    let options = options(&args);
    let reporter = reporter::for_mode(args.progress, global.quiet);

    // `-` and wrapped archives cannot seek: they are read in one pass.
    let input: Option<Box<dyn std::io::Read + Send>> = if stdin {
        Some(Box::new(std::io::stdin()))
    } else {
        // A file that cannot be opened gets its error from `Archive::open`.
        std::fs::File::open(&args.archive).ok().and_then(|mut file| {
            let wrapped = Wrapper::sniff_file(&mut file).is_ok_and(|w| w != Wrapper::None);
            wrapped.then(|| Box::new(file) as Box<dyn std::io::Read + Send>)
        })
    };
    let pushed = if let Some(input) = input {
        let streamed = Streamed { input, destinations, target: target.as_ref(), credentials, options: &options };
        push_streamed(&args, streamed, reporter).await?
    } else {
        let path = args.archive.clone();
        let archive =
            tokio::task::spawn_blocking(move || Archive::open(path)).await.context("reading the archive")??;
        let archive = Arc::new(archive);
        let plans = plan(archive.images(), archive.path(), &args, destinations, target.as_ref())?;
        let client = client(&args, &plans, target.as_ref(), credentials, &reporter)?;
        match hoist_transfer::push(Arc::clone(&archive), &client, &plans, &options, reporter).await {
            Ok(pushed) => pushed,
            Err(error) => return Err(report_error(&args, error)),
        }
    };

    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Text => {
            for image in &pushed {
                writeln!(stdout, "{}@{}", image.reference, image.digest)?;
            }
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &summary(&pushed))?;
            writeln!(stdout)?;
        }
    }
    Ok(())
}

/// A push from an input read once, front to back.
struct Streamed<'a> {
    input: Box<dyn std::io::Read + Send>,
    destinations: Vec<Reference>,
    target: Option<&'a RegistryTarget>,
    credentials: CredentialStore,
    options: &'a PushOptions,
}

async fn push_streamed(
    args: &PushArgs,
    streamed: Streamed<'_>,
    reporter: Arc<dyn Reporter>,
) -> anyhow::Result<Vec<PushedImage>> {
    let Streamed { input, destinations, target, credentials, options } = streamed;
    let early = if destinations.is_empty() {
        Vec::new()
    } else {
        vec![PushPlan { image: 0, destinations: destinations.clone() }]
    };
    let client = client(args, &early, target, credentials, &reporter)?;
    // Sessions in the first DEST's repository, when every DEST can mount from it.
    let hold = match destinations.first() {
        Some(first) if destinations.iter().all(|d| d.registry() == first.registry()) => Hold::Session(first.clone()),
        _ => Hold::Stage(None),
    };
    let streamed = read_stream(input, args.archive.clone(), &client, hold, options, &reporter).await;
    let streamed = match streamed {
        Ok(streamed) => streamed,
        Err(error) => return Err(report_error(args, error)),
    };
    let plans = match plan(streamed.images(), streamed.archive().label(), args, destinations, target) {
        Ok(plans) => plans,
        Err(error) => {
            streamed.abandon().await;
            return Err(error);
        }
    };
    streamed.push(&client, &plans, options, reporter).await.map_err(|error| report_error(args, error))
}

fn report_error(args: &PushArgs, error: hoist_transfer::PushError) -> anyhow::Error {
    if args.progress == ProgressMode::Json {
        reporter::emit_error(&crate::failure::message(&error), error.hint().as_deref());
    }
    error.into()
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
/// HTTPS, credentials, and TLS material.
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
    Ok(Client::new(ClientOptions {
        plain_http,
        https,
        insecure: args.network.insecure,
        user_agent: None,
        credentials,
        ca_certs: args.network.ca_cert.clone(),
        certs_dir: Some(args.network.certs_dir.clone()),
        on_retry: Some(hoist_transfer::retry_observer(reporter)),
        ..ClientOptions::default()
    })?)
}

/// Where credentials come from: `--username` with `--password-stdin` or
/// `--password`, else `HOIST_USERNAME`/`HOIST_PASSWORD`, else docker's and
/// podman's stored logins.
pub(crate) fn credentials(network: &NetworkArgs) -> anyhow::Result<CredentialStore> {
    let store = CredentialStore::from_environment();
    let password = if network.password_stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the password from stdin")?;
        let password = text.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(Usage::new(
                "--password-stdin read an empty password",
                "pipe the password in: `echo \"$PASS\" | hoist push --username USER --password-stdin …`",
            )
            .into());
        }
        Some(password)
    } else if let Some(password) = &network.password {
        eprintln!("warning: --password is visible to other users in `ps`; prefer --password-stdin or HOIST_PASSWORD");
        Some(password.clone())
    } else {
        std::env::var("HOIST_PASSWORD").ok().filter(|p| !p.is_empty())
    };
    match (network.username.as_deref().filter(|u| !u.is_empty()), password) {
        (Some(username), Some(password)) => {
            Ok(store
                .with_explicit(Credential::Basic { username: username.to_owned(), password: Secret::new(password) }))
        }
        (Some(_), None) => {
            Err(Usage::new("--username needs a password", "add --password-stdin (or set HOIST_PASSWORD)").into())
        }
        (None, Some(_)) => {
            Err(Usage::new("a password was given without --username", "add --username USER (or set HOIST_USERNAME)")
                .into())
        }
        (None, None) => Ok(store),
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
