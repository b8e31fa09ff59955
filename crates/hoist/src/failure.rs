//! Turns any error into `error: …` and `hint: …` on stderr and a documented
//! exit code: one code per class of failure, each meaning one thing.

use std::fmt;
use std::process::ExitCode;

use hoist_archive::ArchiveError;
use hoist_harbor::{HarborError, HarborErrorKind};
use hoist_registry::{ErrorKind, RegistryError};
use hoist_transfer::{CopyError, ProvisionError, PullError, PushError};

/// Exit codes, as documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    /// A bug in hoist.
    Bug = 1,
    Usage = 2,
    BadArchive = 3,
    Auth = 4,
    NotFound = 5,
    Unavailable = 6,
    Mismatch = 7,
    Rejected = 8,
    Protocol = 9,
    Local = 10,
    /// 128 + SIGINT, as shells report it.
    Interrupted = 130,
    /// 128 + SIGTERM.
    Terminated = 143,
}

pub(crate) fn usage_exit() -> ExitCode {
    ExitCode::from(Exit::Usage as u8)
}

/// A mistake in how hoist was called, found after flag parsing.
#[derive(Debug)]
pub(crate) struct Usage {
    message: String,
    hint: String,
}

impl Usage {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Usage {}

/// A signal stopped the command.
#[derive(Debug)]
pub(crate) struct Interrupted {
    /// `SIGINT` or `SIGTERM`.
    pub(crate) signal: &'static str,
    /// What was cleaned up, for the message.
    pub(crate) cleaned: String,
    /// What to do next.
    pub(crate) hint: &'static str,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}; {}", self.signal, self.cleaned)
    }
}

impl std::error::Error for Interrupted {}

/// A local problem the binary itself met: writing the output, reading a password.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Local {}

/// Prints the error and its hint; returns the exit code for its class.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    let (exit, hint) = classify(error);
    eprintln!("error: {}", message(error.as_ref()));
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(exit as u8)
}

/// [`report`] as the `error` event of `--progress json` (message and hint).
pub(crate) fn report_as_event(error: &anyhow::Error) -> ExitCode {
    let (exit, hint) = classify(error);
    crate::reporter::emit_error(&message(error.as_ref()), hint.as_deref());
    ExitCode::from(exit as u8)
}

/// The error and its causes, `: `-joined, leaving out a cause whose text an
/// earlier message already quotes (many say what went wrong underneath).
pub(crate) fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// The exit code and hint for `error`: the first cause in its chain that
/// hoist knows decides.
pub(crate) fn classify(error: &anyhow::Error) -> (Exit, Option<String>) {
    for cause in error.chain() {
        if let Some(usage) = cause.downcast_ref::<Usage>() {
            return (Exit::Usage, Some(usage.hint.clone()));
        }
        if let Some(interrupted) = cause.downcast_ref::<Interrupted>() {
            let exit = if interrupted.signal == "SIGTERM" { Exit::Terminated } else { Exit::Interrupted };
            return (exit, Some(interrupted.hint.into()));
        }
        if let Some(local) = cause.downcast_ref::<Local>() {
            return (Exit::Local, Some(local.hint.clone()));
        }
        if let Some(archive) = cause.downcast_ref::<ArchiveError>() {
            let exit = if archive.is_verification() { Exit::Mismatch } else { Exit::BadArchive };
            return (exit, archive.hint());
        }
        if let Some(registry) = cause.downcast_ref::<RegistryError>() {
            return (registry_exit(registry), registry.hint());
        }
        if let Some(harbor) = cause.downcast_ref::<HarborError>() {
            return (harbor_exit(harbor), harbor.hint());
        }
        if let Some(push) = cause.downcast_ref::<PushError>() {
            return (push_exit(push), push.hint());
        }
        if let Some(provision) = cause.downcast_ref::<ProvisionError>() {
            return (provision_exit(provision), provision.hint());
        }
        if let Some(pull) = cause.downcast_ref::<PullError>() {
            return (pull_exit(pull), pull.hint());
        }
        if let Some(copy) = cause.downcast_ref::<CopyError>() {
            return (copy_exit(copy), copy.hint());
        }
        if let Some(oci) = cause.downcast_ref::<hoist_oci::OciError>() {
            return (Exit::BadArchive, Some(format!("the archive names something invalid: {oci}")));
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return (Exit::Local, Some(format!("a local file or stream failed ({})", io.kind())));
        }
    }
    (Exit::Bug, Some("this is a bug in hoist; please report it".into()))
}

fn push_exit(error: &PushError) -> Exit {
    match error {
        PushError::Archive(archive) if archive.is_verification() => Exit::Mismatch,
        PushError::Archive(_) | PushError::LayerRead { .. } => Exit::BadArchive,
        PushError::Registry(registry) => registry_exit(registry),
        PushError::DiffIdMismatch { .. } => Exit::Mismatch,
        PushError::Staging(_) => Exit::Local,
        PushError::Internal(_) => Exit::Bug,
        PushError::NotPublished { cause, .. } => push_exit(cause),
        PushError::Plan { .. } | PushError::Reference(_) => Exit::Usage,
        // The provisioner is the binary's own (Harbor projects).
        PushError::Provision(provision) => provision_exit(provision),
    }
}

fn harbor_exit(error: &HarborError) -> Exit {
    match error.kind() {
        HarborErrorKind::Network | HarborErrorKind::Unavailable => Exit::Unavailable,
        HarborErrorKind::Unauthorized | HarborErrorKind::Forbidden | HarborErrorKind::CreationRestricted => Exit::Auth,
        HarborErrorKind::ProjectMissing => Exit::NotFound,
        // The destination names something Harbor cannot hold: a malformed reference for it.
        HarborErrorKind::InvalidName => Exit::Usage,
        HarborErrorKind::Rejected => Exit::Rejected,
        HarborErrorKind::Protocol => Exit::Protocol,
        HarborErrorKind::Local => Exit::Local,
    }
}

fn pull_exit(error: &PullError) -> Exit {
    match error {
        PullError::Registry(registry) => registry_exit(registry),
        PullError::NoManifest { .. } | PullError::NoPlatform { .. } => Exit::NotFound,
        _ if error.is_verification() => Exit::Mismatch,
        // What the registry served is not a valid image.
        PullError::Document { .. } | PullError::Inconsistent { .. } => Exit::Protocol,
        // A local write failure (disk full, closed stdout) is never a verification failure.
        PullError::Write { .. } => Exit::Local,
        _ => Exit::Bug,
    }
}

fn copy_exit(error: &CopyError) -> Exit {
    match error {
        CopyError::Source(pull) => pull_exit(pull),
        CopyError::Registry(registry) => registry_exit(registry),
        _ if error.is_verification() => Exit::Mismatch,
        // What the source holds is not something hoist can copy as an image.
        CopyError::Unusable { .. } => Exit::Protocol,
        CopyError::OtherDigest { .. } => Exit::Usage,
        CopyError::NotPublished { cause, .. } => copy_exit(cause),
        _ => Exit::Bug,
    }
}

/// A provisioner's error is its own (Harbor's).
fn provision_exit(error: &ProvisionError) -> Exit {
    error.inner().downcast_ref::<HarborError>().map_or(Exit::Bug, harbor_exit)
}

fn registry_exit(error: &RegistryError) -> Exit {
    match error.kind() {
        ErrorKind::Network | ErrorKind::Unavailable => Exit::Unavailable,
        ErrorKind::Unauthorized | ErrorKind::Denied => Exit::Auth,
        ErrorKind::NotFound => Exit::NotFound,
        ErrorKind::Rejected => Exit::Rejected,
        ErrorKind::Protocol => Exit::Protocol,
        ErrorKind::Mismatch => Exit::Mismatch,
        ErrorKind::Local => Exit::Local,
    }
}
