//! `hoist login` and `hoist logout`, as docker's: the credentials are
//! checked against the registry, then stored where docker keeps them
//! (`hoist_registry::credentials::store`), so that every command (hoist's,
//! docker's, podman's, skopeo's) finds them.

use hoist_oci::Reference;
use hoist_registry::credentials::store::{self, Stored};
use hoist_registry::{Client, ClientOptions, Credential, CredentialSource};

use crate::cli::{LoginArgs, LogoutArgs};
use crate::commands::push::{connection, credentials};
use crate::failure::{Local, Usage};

/// How the user asked to reach the registry, when `REGISTRY` was a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let (registry, scheme) = registry_name(args.registry.as_deref())?;
    let probe = probe(&registry)?;
    let store = credentials(&args.network)?;
    let Ok(Some((Credential::Basic { username, password }, CredentialSource::Explicit))) = store.lookup(&registry)
    else {
        return Err(Usage::new(
            "hoist login needs a user name and a password",
            "give `--username USER` and pipe the password in with `--password-stdin` (or set HOIST_USERNAME and \
             HOIST_PASSWORD)",
        )
        .into());
    };
    let mut options = ClientOptions::for_registries(&connection(&args.network.connection), [registry.clone()], store);
    match scheme {
        Some(Scheme::Http) => options.plain_http.push(registry.clone()),
        Some(Scheme::Https) => options.https.push(registry.clone()),
        None => {}
    }
    let client = Client::new(options)?;
    client.check_registry(&probe).await?;
    client.check_credentials(&probe).await?;
    let config = store::docker_config_path().ok_or_else(|| Local {
        message: "cannot tell where docker's config.json is: neither DOCKER_CONFIG nor HOME is set".into(),
        hint: "set DOCKER_CONFIG to the directory that holds (or will hold) config.json".into(),
    })?;
    let key = registry.clone();
    let stored = tokio::task::spawn_blocking(move || store::store(&config, &key, &username, &password)).await??;
    match stored {
        Stored::File(path) => {
            eprintln!(
                "warning: the password is stored unencrypted in {}; a credential helper (`credsStore` in that file) \
                 keeps it elsewhere",
                path.display()
            );
            eprintln!("Login Succeeded");
        }
        Stored::Helper(helper) => eprintln!("Login Succeeded (stored by docker-credential-{helper})"),
    }
    Ok(())
}

pub(crate) async fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    let (registry, _) = registry_name(args.registry.as_deref())?;
    let config = store::docker_config_path().ok_or_else(|| Local {
        message: "cannot tell where docker's config.json is: neither DOCKER_CONFIG nor HOME is set".into(),
        hint: "set DOCKER_CONFIG to the directory that holds config.json".into(),
    })?;
    let key = registry.clone();
    let erased = tokio::task::spawn_blocking(move || store::erase(&config, &key)).await??;
    if erased.is_empty() {
        eprintln!("Not logged in to {registry}");
    } else {
        eprintln!("Removing login credentials for {registry}");
    }
    Ok(())
}

/// `REGISTRY` as docker takes it: `host[:port]`, or a URL whose host and
/// port are kept (docker's `ConvertToHostname`); Docker Hub's names, and
/// none at all, mean Docker Hub.
fn registry_name(given: Option<&str>) -> Result<(String, Option<Scheme>), Usage> {
    let Some(given) = given.map(str::trim).filter(|g| !g.is_empty()) else { return Ok(("docker.io".into(), None)) };
    let (scheme, rest) = match given.split_once("://") {
        Some(("http", rest)) => (Some(Scheme::Http), rest),
        Some(("https", rest)) => (Some(Scheme::Https), rest),
        Some((other, _)) => {
            return Err(Usage::new(
                format!("`{given}`: {other}:// is not a registry address"),
                "give the registry as host[:port], e.g. `registry.example.com` or `127.0.0.1:5000`",
            ));
        }
        None => (None, given),
    };
    let host = rest.split('/').next().unwrap_or_default().to_ascii_lowercase();
    if matches!(host.as_str(), "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        return Ok(("docker.io".into(), None));
    }
    probe(&host)?;
    Ok((host, scheme))
}

/// A reference on `registry`, for its `/v2/`.
fn probe(registry: &str) -> Result<Reference, Usage> {
    Reference::from_parts(registry, "v2", None).map_err(|e| {
        Usage::new(
            format!("`{registry}` is not a registry address: {e}"),
            "give the registry as host[:port], e.g. `registry.example.com` or `127.0.0.1:5000`",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_named_as_docker_names_them() {
        let name = |given: Option<&str>| registry_name(given).ok();
        assert_eq!(name(None), Some(("docker.io".into(), None)));
        assert_eq!(name(Some("index.docker.io")), Some(("docker.io".into(), None)));
        assert_eq!(name(Some("https://index.docker.io/v1/")), Some(("docker.io".into(), None)));
        assert_eq!(name(Some("registry.example.com")), Some(("registry.example.com".into(), None)));
        assert_eq!(name(Some("http://127.0.0.1:5000/v2/")), Some(("127.0.0.1:5000".into(), Some(Scheme::Http))));
        assert_eq!(
            name(Some("https://Harbor.Example:8443")),
            Some(("harbor.example:8443".into(), Some(Scheme::Https)))
        );
        assert!(name(Some("ftp://x")).is_none());
        assert!(name(Some("not a host")).is_none());
    }
}
