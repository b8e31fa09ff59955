//! Turns any error into `error: …` and `hint: …` on stderr and a documented exit code.

use std::fmt;
use std::process::ExitCode;

use hoist_archive::ArchiveError;
use hoist_registry::{ErrorKind, RegistryError};
use hoist_transfer::{PullError, PushError};

/// Exit codes, as documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    Failure = 1,
    Usage = 2,
    BadArchive = 3,
    Auth = 4,
    NotFound = 5,
    Unavailable = 6,
    Verification = 7,
    Rejected = 8,
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

/// Prints the error and its hint; returns the exit code for its class.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    let (exit, hint) = classify(error);
    eprintln!("error: {}", message(error.as_ref()));
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
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

fn classify(error: &anyhow::Error) -> (Exit, Option<String>) {
    for cause in error.chain() {
        if let Some(usage) = cause.downcast_ref::<Usage>() {
            return (Exit::Usage, Some(usage.hint.clone()));
        }
        if let Some(archive) = cause.downcast_ref::<ArchiveError>() {
            let exit = if archive.is_verification() { Exit::Verification } else { Exit::BadArchive };
            return (exit, archive.hint());
        }
        if let Some(registry) = cause.downcast_ref::<RegistryError>() {
            return (registry_exit(registry), registry.hint());
        }
        if let Some(push) = cause.downcast_ref::<PushError>() {
            let exit = match push {
                PushError::Archive(_) | PushError::LayerRead { .. } => Exit::BadArchive,
                PushError::Registry(registry) => registry_exit(registry),
                PushError::DiffIdMismatch { .. } => Exit::Verification,
                PushError::NoDestination { .. } => Exit::Usage,
                PushError::Internal(_) | PushError::Staging(_) => Exit::Failure,
            };
            return (exit, push.hint());
        }
        if let Some(pull) = cause.downcast_ref::<PullError>() {
            return (pull_exit(pull), pull.hint());
        }
        if let Some(oci) = cause.downcast_ref::<hoist_oci::OciError>() {
            return (Exit::BadArchive, Some(format!("the archive names something invalid: {oci}")));
        }
    }
    (Exit::Failure, None)
}

fn pull_exit(error: &PullError) -> Exit {
    match error {
        PullError::Registry(registry) => registry_exit(registry),
        PullError::NoManifest { .. } | PullError::NoPlatform { .. } => Exit::NotFound,
        _ if error.is_verification() => Exit::Verification,
        // A local write failure (disk full, closed stdout) is never a verification failure.
        _ => Exit::Failure,
    }
}

fn registry_exit(error: &RegistryError) -> Exit {
    match error.kind() {
        ErrorKind::Network | ErrorKind::Unavailable => Exit::Unavailable,
        ErrorKind::Unauthorized | ErrorKind::Denied => Exit::Auth,
        ErrorKind::NotFound => Exit::NotFound,
        ErrorKind::Rejected => Exit::Rejected,
        ErrorKind::Protocol => Exit::Verification,
    }
}
