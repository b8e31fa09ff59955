//! From what a user asked to a plan: which image of an archive goes where,
//! and the one call that reads an archive and pushes it as planned. The
//! command line and the web service both come through here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hoist_archive::{Archive, ArchiveInput, Image};
use hoist_oci::{Reference, RegistryTarget};
use hoist_registry::{Client, ClientOptions, Connection, CredentialStore, RegistryCheck, RegistryError};

use crate::provision::Provision;
use crate::{Hold, PushError, PushOptions, PushPlan, PushRun, PushedImage, Reporter, read_stream, retry_observer};

/// Where an archive's images go, as the user said it.
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    /// Named destinations (`DEST`): the chosen image goes to each.
    pub references: Vec<Reference>,
    /// With no `references`: each image goes to its RepoTags, moved to this
    /// registry and prefix (`--registry`) when given.
    pub rehome: Option<RegistryTarget>,
    /// Which image of a multi-image archive: its 1-based number or a tag.
    pub image: Option<String>,
}

impl Destinations {
    /// Every registry these destinations name before the archive is read.
    fn named_registries(&self) -> Vec<String> {
        let mut registries: Vec<String> = Vec::new();
        let named =
            self.references.iter().map(Reference::registry).chain(self.rehome.iter().map(RegistryTarget::registry));
        for registry in named {
            if !registries.iter().any(|r| r == registry) {
                registries.push(registry.to_owned());
            }
        }
        registries
    }
}

/// One push of an archive, as [`push_archive`] takes it.
#[derive(Debug)]
pub struct PushRequest {
    pub input: ArchiveInput,
    pub destinations: Destinations,
    pub connection: Connection,
    pub credentials: CredentialStore,
    pub options: PushOptions,
    /// Makes each destination ready before the first blob (a Harbor
    /// project); `None`: destinations are taken as they are.
    pub provision: Option<Arc<dyn Provision>>,
}

/// Reads the archive `request` names and pushes it as it says: every
/// registry named is asked for `/v2/` before the archive is read (the
/// archive's RepoTags, once known), and each destination repository is
/// provisioned (see [`Provision`]) as soon as it is known, before any blob
/// goes anywhere; a seekable archive is indexed and its layers read by
/// position, a stream is read once with its layers held in upload sessions
/// (every destination on one registry) or staged.
pub async fn push_archive(request: PushRequest, run: &PushRun) -> Result<Vec<PushedImage>, PushError> {
    let PushRequest { input, destinations, connection, credentials, options, provision } = request;
    options.validate()?;
    let named = destinations.named_registries();
    let mut clients =
        Clients { connection: &connection, destinations: &destinations, credentials, run, made: Vec::new() };
    let mut ready = Readiness { provision, checks: HashMap::new(), provisioned: Vec::new() };
    if !named.is_empty() {
        ready.check(&clients.covering(&named)?, &named).await?;
    }
    match input {
        ArchiveInput::Seekable(path) => {
            let archive = tokio::task::spawn_blocking(move || Archive::open(path))
                .await
                .map_err(|e| PushError::Internal(format!("the archive reader failed: {e}")))??;
            let archive = Arc::new(archive);
            let plans = plan(archive.images(), archive.path(), &destinations)?;
            let registries = registries_of(&plans);
            let client = clients.covering(&registries)?;
            ready.check(&client, &registries).await?;
            ready.provision(&all_destinations(&plans), run).await?;
            crate::push(archive, &client, &plans, &options, run).await
        }
        ArchiveInput::Stream { reader, label } => {
            // Layers go into sessions in the destinations before the stream
            // ends: those must exist first (a Harbor project, say).
            ready.provision(&destinations.references, run).await?;
            let first = destinations.references.first();
            // Sessions in the first DEST's repository, when every DEST can mount from it.
            let hold = match first {
                Some(first) if destinations.references.iter().all(|d| d.registry() == first.registry()) => {
                    Hold::Session(first.clone())
                }
                _ => Hold::Stage(None),
            };
            let streamed = read_stream(reader, label, &clients.covering(&named)?, hold, &options, run).await?;
            let planned = async {
                let plans = plan(streamed.images(), streamed.archive().label(), &destinations)?;
                let registries = registries_of(&plans);
                let client = clients.covering(&registries)?;
                ready.check(&client, &registries).await?;
                ready.provision(&all_destinations(&plans), run).await?;
                Ok::<_, PushError>((plans, client))
            };
            match planned.await {
                Ok((plans, client)) => streamed.push(&client, &plans, &options, run).await,
                Err(error) => {
                    streamed.abandon().await;
                    Err(error)
                }
            }
        }
    }
}

/// A push's registry clients, one per set of registries and reused for any
/// set it covers, so credentials are looked up and tokens fetched once.
struct Clients<'a> {
    connection: &'a Connection,
    destinations: &'a Destinations,
    credentials: CredentialStore,
    run: &'a PushRun,
    /// The registries each client was made for.
    made: Vec<(Vec<String>, Client)>,
}

impl Clients<'_> {
    fn covering(&mut self, registries: &[String]) -> Result<Client, PushError> {
        if let Some((_, client)) = self.made.iter().find(|(covered, _)| registries.iter().all(|r| covered.contains(r)))
        {
            return Ok(client.clone());
        }
        let made = client(self.connection, self.destinations, registries.to_vec(), self.credentials.clone(), self.run)?;
        self.made.push((registries.to_vec(), made.clone()));
        Ok(made)
    }
}

/// What [`push_archive`] checks before it reads the archive, without one:
/// each registry the destinations name answers `/v2/` and takes the
/// credentials held for it. Returns what each `/v2/` answered, by registry.
/// For a caller that must decide before it accepts an archive (a service
/// taking uploads).
pub async fn check_destinations(
    destinations: &Destinations,
    connection: &Connection,
    credentials: CredentialStore,
    run: &PushRun,
) -> Result<HashMap<String, RegistryCheck>, PushError> {
    let named = destinations.named_registries();
    let mut ready = Readiness { provision: None, checks: HashMap::new(), provisioned: Vec::new() };
    ready.check(&client(connection, destinations, named.clone(), credentials, run)?, &named).await?;
    Ok(ready.checks)
}

/// The registry client for a push's `registries`, its `--registry` scheme kept.
fn client(
    connection: &Connection,
    destinations: &Destinations,
    registries: Vec<String>,
    credentials: CredentialStore,
    run: &PushRun,
) -> Result<Client, PushError> {
    Ok(registry_client(connection, registries, credentials, destinations.rehome.as_ref(), run.reporter())?)
}

/// The registry client every command uses for `registries`: `connection`'s
/// choices for each, `target`'s scheme (`http://`, `https://`) for its
/// registry, retries reported to `reporter`.
pub fn registry_client(
    connection: &Connection,
    registries: impl IntoIterator<Item = String>,
    credentials: CredentialStore,
    target: Option<&RegistryTarget>,
    reporter: &Arc<dyn Reporter>,
) -> Result<Client, RegistryError> {
    let mut options = ClientOptions::for_registries(connection, registries, credentials);
    if let Some(target) = target {
        if target.plain_http() {
            options.plain_http.push(target.registry().to_owned());
        }
        if target.https() {
            options.https.push(target.registry().to_owned());
        }
    }
    options.on_retry = Some(retry_observer(reporter));
    Client::new(options)
}

/// Every destination of `plans`, collected: an iterator borrowed across an
/// await would keep the push's future from being `Send` to spawn.
fn all_destinations(plans: &[PushPlan]) -> Vec<Reference> {
    plans.iter().flat_map(|p| p.destinations.iter().cloned()).collect()
}

fn registries_of(plans: &[PushPlan]) -> Vec<String> {
    let mut registries: Vec<String> = Vec::new();
    for reference in plans.iter().flat_map(|p| &p.destinations) {
        if !registries.iter().any(|r| r == reference.registry()) {
            registries.push(reference.registry().to_owned());
        }
    }
    registries
}

/// What a push has learned of its registries and done to its
/// destinations so far.
struct Readiness {
    provision: Option<Arc<dyn Provision>>,
    /// `host[:port]` → what its `GET /v2/` answered.
    checks: HashMap<String, RegistryCheck>,
    /// `registry/repository` of each destination provisioned.
    provisioned: Vec<String>,
}

impl Readiness {
    /// Asks each registry not asked yet for `/v2/` (see
    /// [`Client::check_registry`]): a mistyped or unreachable one is the
    /// first thing said; then whether it takes the credentials held for it
    /// ([`Client::check_held_credentials`]), so refused ones are said before
    /// the archive is read.
    async fn check(&mut self, client: &Client, registries: &[String]) -> Result<(), PushError> {
        for registry in registries {
            if self.checks.contains_key(registry) {
                continue;
            }
            let probe = Reference::from_parts(registry, "v2", None)?;
            let check = client.check_registry(&probe).await?;
            client.check_held_credentials(&probe).await?;
            self.checks.insert(registry.clone(), check);
        }
        Ok(())
    }

    /// Provisions each destination repository not done yet, on a registry
    /// already checked; what is made is reported and recorded in `run`.
    async fn provision<'a>(
        &mut self,
        destinations: impl IntoIterator<Item = &'a Reference>,
        run: &PushRun,
    ) -> Result<(), PushError> {
        let Some(provision) = self.provision.clone() else { return Ok(()) };
        for reference in destinations {
            let location = reference.location();
            if self.provisioned.contains(&location) {
                continue;
            }
            let check = self.checks.get(reference.registry()).ok_or_else(|| {
                PushError::Internal(format!("{} was not checked before provisioning", reference.registry()))
            })?;
            crate::provision_destination(provision.as_ref(), reference, check, run).await?;
            self.provisioned.push(location);
        }
        Ok(())
    }
}

/// Decides which image goes where.
pub fn plan(images: &[Image], label: &Path, destinations: &Destinations) -> Result<Vec<PushPlan>, PushError> {
    let chosen: Vec<usize> = match &destinations.image {
        Some(choice) => vec![choose_image(images, choice)?],
        None => (0..images.len()).collect(),
    };
    if !destinations.references.is_empty() {
        if chosen.len() > 1 {
            return Err(PushError::plan(
                format!("`{}` holds {} images; a DEST names one", label.display(), chosen.len()),
                "choose one with `--image N` or `--image TAG`, or give no DEST to push every image to its RepoTags",
            ));
        }
        return Ok(vec![PushPlan { image: chosen[0], destinations: destinations.references.clone() }]);
    }
    chosen
        .into_iter()
        .map(|index| {
            let tags = &images[index].tags;
            if tags.is_empty() {
                return Err(PushError::plan(
                    format!("image {} in `{}` has no RepoTags, so it has no destination", index + 1, label.display()),
                    "name one: `hoist push ARCHIVE HOST/REPOSITORY:TAG`",
                ));
            }
            let references = tags
                .iter()
                .map(|tag| {
                    let reference = Reference::parse(tag).map_err(|e| {
                        PushError::plan(
                            format!("RepoTag `{tag}` of image {} is not a reference: {e}", index + 1),
                            "name a destination: `hoist push ARCHIVE HOST/REPOSITORY:TAG`",
                        )
                    })?;
                    match &destinations.rehome {
                        Some(target) => Ok(target.rehome(&reference)?),
                        None => Ok(reference),
                    }
                })
                .collect::<Result<Vec<_>, PushError>>()?;
            Ok(PushPlan { image: index, destinations: references })
        })
        .collect()
}

fn choose_image(images: &[Image], choice: &str) -> Result<usize, PushError> {
    if let Ok(number) = choice.parse::<usize>() {
        if (1..=images.len()).contains(&number) {
            return Ok(number - 1);
        }
        return Err(PushError::plan(
            format!("--image {number}: the archive holds {} images", images.len()),
            "number images from 1; `hoist inspect ARCHIVE` lists them",
        ));
    }
    images.iter().position(|image| image.tags.iter().any(|t| t == choice)).ok_or_else(|| {
        PushError::plan(
            format!("no image in the archive is tagged `{choice}`"),
            "`hoist inspect ARCHIVE` lists the images and their tags",
        )
    })
}

/// The `--output json` document of a push: each reference published, its
/// manifest digest, and every blob (config first) with what placing it took.
pub fn summary(pushed: &[PushedImage]) -> serde_json::Value {
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
