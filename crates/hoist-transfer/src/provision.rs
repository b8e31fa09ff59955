//! Making sure a destination can take a push before the first blob goes
//! there: some registries refuse pushes into a namespace nobody created
//! (Harbor's projects). This crate knows none of them: a caller hands a
//! [`Provision`] to the push (or the copy), which calls it once per
//! destination repository, after the registry check and before any blob.

use std::error::Error;
use std::fmt;

use futures_util::future::BoxFuture;
use hoist_oci::Reference;
use hoist_registry::RegistryCheck;

use crate::PushRun;

/// Something a provisioner made for a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The registry, `host[:port]`.
    pub registry: String,
    /// What kind of thing: `project` for a Harbor project.
    pub kind: String,
    pub name: String,
    /// Whether anyone may pull from it.
    pub public: bool,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let visibility = if self.public { "public" } else { "private" };
        write!(f, "{} `{}` on {} ({visibility})", self.kind, self.name, self.registry)
    }
}

/// What [`Provision::ensure`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// Nothing to do: the registry makes what a push names, or it was there.
    Ready,
    /// Made now.
    Created(Created),
}

/// A provisioner's failure, with what to do about it. The push stops
/// before any blob; the caller can look at the provisioner's own error
/// ([`ProvisionError::inner`]) to classify it.
#[derive(Debug)]
pub struct ProvisionError {
    inner: Box<dyn Error + Send + Sync>,
    hint: Option<String>,
}

impl ProvisionError {
    pub fn new(inner: impl Into<Box<dyn Error + Send + Sync>>, hint: Option<String>) -> Self {
        Self { inner: inner.into(), hint }
    }

    /// The provisioner's own error.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Error for ProvisionError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

/// Makes a destination ready for a push.
pub trait Provision: Send + Sync + fmt::Debug {
    /// Makes sure `reference`'s repository can be pushed to, on the
    /// registry `registry` describes (what its `GET /v2/` answered, which
    /// tells what kind of registry it is without another request). Called
    /// once per destination repository before the first blob goes there.
    fn ensure<'a>(
        &'a self,
        reference: &'a Reference,
        registry: &'a RegistryCheck,
    ) -> BoxFuture<'a, Result<Provisioned, ProvisionError>>;
}

/// Makes `reference`'s repository ready with `provision`, on the registry
/// `registry` describes (what [`hoist_registry::Client::check_registry`]
/// returned for it), and reports and records in `run` what it made: the one
/// call a push path makes before its first blob. [`crate::push_archive`]
/// makes it for every destination; a copy makes it for its destination.
pub async fn provision_destination(
    provision: &dyn Provision,
    reference: &Reference,
    registry: &RegistryCheck,
    run: &PushRun,
) -> Result<Provisioned, ProvisionError> {
    let provisioned = provision.ensure(reference, registry).await?;
    if let Provisioned::Created(created) = &provisioned {
        run.reporter().created(created);
        run.record_created(created.clone());
    }
    Ok(provisioned)
}
