//! The binary's `Provision`: Harbor projects made before a push, through
//! hoist-harbor. hoist-transfer calls it once per destination repository;
//! a registry whose `/v2/` challenge is not Harbor's costs nothing more.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use hoist_harbor::{Ensured, HarborClient, HarborError, Login, LoginMode, ProjectPolicy};
use hoist_http::{Transport, TransportOptions};
use hoist_oci::Reference;
use hoist_registry::{Connection, Credential, CredentialStore, RegistryCheck};
use hoist_transfer::{Created, Provision, ProvisionError, Provisioned, Reporter, retry_observer};
use tokio::sync::Mutex;

use crate::cli::ProvisionArgs;

/// Makes Harbor projects as a push needs them.
#[derive(Debug)]
pub(crate) struct HarborProjects {
    transport: Transport,
    credentials: CredentialStore,
    policy: ProjectPolicy,
    mode: LoginMode,
    /// `registry` → its client; `(registry, project)` → done.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, Arc<HarborClient>>,
    done: Vec<(String, String)>,
}

impl HarborProjects {
    /// A provisioner reaching Harbor as `connection` says (its TLS trust,
    /// `certs.d`, timeout; the scheme is the registry check's), with the
    /// credentials the push uses, retries told to `reporter`.
    pub(crate) fn new(
        args: &ProvisionArgs,
        connection: &Connection,
        credentials: CredentialStore,
        reporter: &Arc<dyn Reporter>,
    ) -> anyhow::Result<Self> {
        let mut options = TransportOptions::for_servers(connection, Vec::new());
        options.on_retry = Some(retry_observer(reporter));
        let transport = Transport::new(options).map_err(HarborError::from)?;
        Ok(Self {
            transport,
            credentials,
            policy: ProjectPolicy { create: !args.no_create, public: args.public },
            mode: if args.harbor_session { LoginMode::Session } else { LoginMode::Basic },
            state: Mutex::default(),
        })
    }

    async fn ensure_harbor(&self, reference: &Reference, check: &RegistryCheck) -> Result<Provisioned, HarborError> {
        let registry = reference.registry().to_owned();
        let project = hoist_harbor::project_of(reference.repository(), &registry)?.to_owned();
        let mut state = self.state.lock().await;
        if state.done.iter().any(|(r, p)| *r == registry && *p == project) {
            return Ok(Provisioned::Ready);
        }
        let client = match state.clients.get(&registry) {
            Some(client) => Arc::clone(client),
            None => {
                let login = self.login(&registry).await?;
                let client = Arc::new(HarborClient::new(&self.transport, check.url(), login));
                state.clients.insert(registry.clone(), Arc::clone(&client));
                client
            }
        };
        let ensured = client.ensure_project(&project, self.policy).await?;
        state.done.push((registry.clone(), project.clone()));
        Ok(match ensured {
            Ensured::Existed => Provisioned::Ready,
            Ensured::Created { public } => {
                Provisioned::Created(Created { registry, kind: "project".into(), name: project, public })
            }
        })
    }

    /// The push's credentials for `registry`, as a login to Harbor's API
    /// (only a user name and password or token can be one).
    async fn login(&self, registry: &str) -> Result<Option<Login>, HarborError> {
        let store = self.credentials.clone();
        let host = registry.to_owned();
        // Helpers are processes; keep them off the async workers.
        let found = tokio::task::spawn_blocking(move || store.lookup(&host)).await.map_err(|e| {
            HarborError::new(hoist_harbor::HarborErrorKind::Local, "look up credentials").with_detail(e.to_string())
        })?;
        let found = found.map_err(|e| {
            HarborError::new(hoist_harbor::HarborErrorKind::Local, format!("look up credentials for {registry}"))
                .with_detail(e.to_string())
                .with_hint(e.hint().unwrap_or_default())
        })?;
        Ok(match found {
            Some((Credential::Basic { username, password }, source)) => {
                Some(Login { username, password, source: source.to_string(), mode: self.mode })
            }
            _ => None,
        })
    }
}

impl Provision for HarborProjects {
    fn ensure<'a>(
        &'a self,
        reference: &'a Reference,
        registry: &'a RegistryCheck,
    ) -> BoxFuture<'a, Result<Provisioned, ProvisionError>> {
        async move {
            if !hoist_harbor::is_harbor_service(registry.bearer_service()) {
                return Ok(Provisioned::Ready);
            }
            self.ensure_harbor(reference, registry).await.map_err(|error| {
                let hint = error.hint();
                ProvisionError::new(error, hint)
            })
        }
        .boxed()
    }
}
