//! `hoist copy SRC DEST`: flags in, one `hoist_transfer::copy` out, with
//! the same output, signals and exit codes as a push.

use std::path::Path;

use hoist_oci::{Platform, Reference};
use hoist_registry::CredentialStore;
use hoist_transfer::{CopyOptions, PushRun, Side};

use crate::cli::{CopyArgs, CopyLogins, GlobalArgs};
use crate::commands::pull::client;
use crate::commands::push::{LoginFlags, credentials, finish, login, password_from_stdin};
use crate::failure::{Local, Usage};
use crate::harbor::HarborProjects;
use crate::reporter;

/// What to do after an interruption.
const AGAIN: &str = "run the same copy again: blobs already at the destination are not sent twice";

pub(crate) async fn exec(args: CopyArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    // Check every name before touching the network.
    let reference = |value: &str, name: &str| {
        Reference::parse(value).map_err(|e| {
            Usage::new(
                e.to_string(),
                format!("write {name} as `host[:port]/path/name[:tag]`, e.g. `127.0.0.1:5000/app:1`"),
            )
        })
    };
    let source = reference(&args.source, "SRC")?;
    let destination = reference(&args.destination, "DEST")?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| Platform::parse(p).map_err(|e| Usage::new(e.to_string(), "e.g. `--platform linux/arm64`")))
        .transpose()?;
    let (source_store, destination_store) = stores(&args)?;
    let run = PushRun::new(reporter::for_mode(args.progress, global.quiet));
    let reporter = run.reporter();
    let connection = crate::commands::push::connection(&args.network.connection);
    let provision = HarborProjects::new(&args.provision, &connection, destination_store.clone(), reporter)?;
    let source_client = client(&args.network, std::slice::from_ref(&source), source_store, reporter)?;
    let destination_client = client(&args.network, std::slice::from_ref(&destination), destination_store, reporter)?;
    let options =
        CopyOptions { jobs: usize::from(args.jobs), platform, referrers: args.referrers, chunk_size: args.chunk_size };
    let copying = async {
        // A mistyped or unreachable registry is the first thing said.
        source_client.check_registry(&source).await?;
        let registry = destination_client.check_registry(&destination).await?;
        // A Harbor project that does not exist is made (or named) before any blob.
        hoist_transfer::provision_destination(&provision, &destination, &registry, &run).await?;
        let from = Side { client: &source_client, reference: &source };
        let to = Side { client: &destination_client, reference: &destination };
        Ok(hoist_transfer::copy(from, to, &options, &run).await?)
    };
    let outcome = crate::interrupt::interruptible(&run, Box::pin(copying), AGAIN).await;
    finish(args.output, &run, outcome)
}

/// The credential stores for SRC's and DEST's registries: each side's own
/// flags, else `--username` (both sides), else the stored logins per host.
fn stores(args: &CopyArgs) -> anyhow::Result<(CredentialStore, CredentialStore)> {
    let logins = &args.logins;
    let from_stdin = [args.network.password_stdin, logins.src_password_stdin, logins.dest_password_stdin];
    if from_stdin.iter().filter(|s| **s).count() > 1 {
        return Err(Usage::new(
            "only one password can come from standard input",
            "give the other with --src-password-file/--dest-password-file FILE, or set \
             HOIST_SRC_PASSWORD/HOIST_DEST_PASSWORD",
        )
        .into());
    }
    let shared = credentials(&args.network)?;
    let source = side(&shared, &SRC, logins)?;
    let destination = side(&shared, &DEST, logins)?;
    Ok((source, destination))
}

/// One side's flags and their names.
struct SideFlags {
    creds: &'static str,
    login: LoginFlags,
    stdin: &'static str,
    env: &'static str,
    /// Where its credentials came from, for a registry that refuses them.
    named: &'static str,
    pick: fn(&CopyLogins) -> SideLogin<'_>,
}

/// What one side's flags say.
struct SideLogin<'a> {
    creds: Option<&'a String>,
    username: Option<&'a String>,
    stdin: bool,
    file: Option<&'a Path>,
}

const SRC: SideFlags = SideFlags {
    creds: "--src-creds",
    login: LoginFlags {
        username: "--src-username",
        password: "--src-password-stdin, --src-password-file FILE (or set HOIST_SRC_PASSWORD)",
    },
    stdin: "--src-password-stdin",
    env: "HOIST_SRC_PASSWORD",
    named: "--src-creds/--src-username/HOIST_SRC_USERNAME",
    pick: |l| SideLogin {
        creds: l.src_creds.as_ref(),
        username: l.src_username.as_ref(),
        stdin: l.src_password_stdin,
        file: l.src_password_file.as_deref(),
    },
};

const DEST: SideFlags = SideFlags {
    creds: "--dest-creds",
    login: LoginFlags {
        username: "--dest-username",
        password: "--dest-password-stdin, --dest-password-file FILE (or set HOIST_DEST_PASSWORD)",
    },
    stdin: "--dest-password-stdin",
    env: "HOIST_DEST_PASSWORD",
    named: "--dest-creds/--dest-username/HOIST_DEST_USERNAME",
    pick: |l| SideLogin {
        creds: l.dest_creds.as_ref(),
        username: l.dest_username.as_ref(),
        stdin: l.dest_password_stdin,
        file: l.dest_password_file.as_deref(),
    },
};

/// `shared`, with this side's own credential when its flags give one.
fn side(shared: &CredentialStore, flags: &SideFlags, logins: &CopyLogins) -> anyhow::Result<CredentialStore> {
    let SideLogin { creds, username, stdin, file } = (flags.pick)(logins);
    let (username, inline) = match creds {
        Some(creds) => match creds.split_once(':') {
            Some((user, password)) => {
                eprintln!(
                    "warning: the password in {} is visible to other users in `ps`; prefer {}",
                    flags.creds, flags.login.password
                );
                (Some(user.to_owned()), Some(password.to_owned()))
            }
            None => (Some(creds.clone()), None),
        },
        None => (username.cloned(), None),
    };
    let password = match (inline, stdin, file) {
        (Some(password), _, _) => Some(password),
        (None, true, _) => Some(password_from_stdin(flags.stdin)?),
        (None, false, Some(file)) => Some(password_from_file(file)?),
        (None, false, None) => std::env::var(flags.env).ok().filter(|p| !p.is_empty()),
    };
    Ok(match login(username.as_deref(), password, &flags.login)? {
        Some(credential) => shared.clone().with_explicit_from(credential, flags.named),
        None => shared.clone(),
    })
}

/// The first line of `file`: a password kept in a file (a mounted secret).
fn password_from_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| Local {
        message: format!("cannot read the password from {}: {e}", file.display()),
        hint: "check the path and its permissions".into(),
    })?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(Usage::new(
            format!("{} holds no password on its first line", file.display()),
            "write the password (or token) on the file's first line",
        )
        .into());
    }
    Ok(password)
}
