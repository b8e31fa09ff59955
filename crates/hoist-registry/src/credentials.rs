//! Where credentials come from.
//!
//! A [`CredentialStore`] answers "what do I send to this registry?" in a
//! fixed order: credentials given explicitly (the binary's `--username` /
//! `--password-stdin` flags, then its `HOIST_USERNAME` / `HOIST_PASSWORD`
//! environment), then docker's `config.json`, then podman's `auth.json`,
//! and otherwise nothing (anonymous).
//!
//! Inside docker's `config.json` the order is docker's own: a
//! `credHelpers` entry for the host, else the `credsStore` helper, else the
//! plain `auths` entry (`auth` is base64 `user:password`; `identitytoken` is
//! an OAuth2 refresh token; `registrytoken` a ready bearer token). Helpers
//! are the `docker-credential-<name>` programs, called with `get` and the
//! server URL on stdin, as docker does.
//!
//! Every secret is a [`Secret`], whose `Debug` never shows the value.
//!
//! [`store`] is the write side: what `hoist login` and `hoist logout` do to
//! the same files and helpers.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::{ErrorKind, RegistryError};

pub mod store;

/// The key docker uses for Docker Hub in `config.json` and with helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// What a helper prints when it has nothing for a server: not an error.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name helpers return to mean "the secret is an identity token".
const IDENTITY_TOKEN_USER: &str = "<token>";

pub use hoist_http::Secret;

/// What to authenticate with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A user name and a password or access token: HTTP Basic to the
    /// registry, or to its token server.
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (docker's `identitytoken`): exchanged for
    /// access tokens with a POST to the token server.
    IdentityToken { username: Option<String>, token: Secret },
    /// A bearer token for the registry itself (docker's `registrytoken`).
    RegistryToken(Secret),
}

/// Where a credential was found, for messages ("refused the credentials
/// from ~/.docker/config.json").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// Flags or environment variables given to hoist.
    Explicit,
    /// Flags or environment variables given to hoist, as named (e.g.
    /// `--src-username/HOIST_SRC_USERNAME`), when there are several sets.
    Given(String),
    /// The `auths` section of a docker `config.json` or podman `auth.json`.
    File(PathBuf),
    /// A `docker-credential-<name>` helper.
    Helper(String),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit => f.write_str("--username/HOIST_USERNAME"),
            Self::Given(flags) => f.write_str(flags),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Helper(name) => write!(f, "docker-credential-{name}"),
        }
    }
}

/// The sources to look in, in order. `Default` is anonymous.
#[derive(Clone, Debug, Default)]
pub struct CredentialStore {
    explicit: Option<(Credential, CredentialSource)>,
    docker_config: Option<PathBuf>,
    podman_auth: Option<PathBuf>,
    /// How long a credential helper may take; `None`: [`HELPER_DEADLINE`].
    helper_deadline: Option<Duration>,
}

impl CredentialStore {
    /// No credentials anywhere.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Docker's and podman's usual files, found from the environment:
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, and
    /// `$REGISTRY_AUTH_FILE` or `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub fn from_environment() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let docker_config = store::docker_config_path();
        let podman_auth =
            var("REGISTRY_AUTH_FILE").or_else(|| var("XDG_RUNTIME_DIR").map(|dir| dir.join("containers/auth.json")));
        Self { explicit: None, docker_config, podman_auth, helper_deadline: None }
    }

    /// Credentials that win over every file (flags or environment).
    #[must_use]
    pub fn with_explicit(mut self, credential: Credential) -> Self {
        self.explicit = Some((credential, CredentialSource::Explicit));
        self
    }

    /// [`Self::with_explicit`], naming the flags it came from (messages
    /// about refused credentials say them).
    #[must_use]
    pub fn with_explicit_from(mut self, credential: Credential, flags: impl Into<String>) -> Self {
        self.explicit = Some((credential, CredentialSource::Given(flags.into())));
        self
    }

    /// Gives a credential helper at most `deadline` to answer (a keychain
    /// prompt waits for a person, but not forever).
    #[must_use]
    pub fn with_helper_deadline(mut self, deadline: Duration) -> Self {
        self.helper_deadline = Some(deadline);
        self
    }

    #[must_use]
    pub fn with_docker_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.docker_config = Some(path.into());
        self
    }

    #[must_use]
    pub fn with_podman_auth(mut self, path: impl Into<PathBuf>) -> Self {
        self.podman_auth = Some(path.into());
        self
    }

    /// The credential for `registry` (as written in a reference:
    /// `docker.io`, `host:port`), and where it came from. Missing files are
    /// not errors; unreadable or malformed ones are, as with docker.
    pub fn lookup(&self, registry: &str) -> Result<Option<(Credential, CredentialSource)>, RegistryError> {
        if let Some(explicit) = &self.explicit {
            return Ok(Some(explicit.clone()));
        }
        for path in [&self.docker_config, &self.podman_auth].into_iter().flatten() {
            if let Some(config) = AuthConfig::load(path)?
                && let Some(found) = config.lookup(path, registry, self.helper_deadline.unwrap_or(HELPER_DEADLINE))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The part of docker's `config.json` (and podman's `auth.json`, which
/// shares the shape) that concerns credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl AuthConfig {
    fn load(path: &Path) -> Result<Option<Self>, RegistryError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(config_error(path, &e.to_string())),
        };
        // An empty file is no logins, as docker (and `hoist login`, writing it) read it.
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&text).map(Some).map_err(|e| config_error(path, &e.to_string()))
    }

    fn lookup(
        &self,
        path: &Path,
        registry: &str,
        deadline: Duration,
    ) -> Result<Option<(Credential, CredentialSource)>, RegistryError> {
        let keys = lookup_keys(registry);
        let server_url = keys[0].clone();
        let helper = keys.iter().find_map(|k| self.cred_helpers.get(k)).or(self.creds_store.as_ref());
        if let Some(helper) = helper.filter(|h| !h.is_empty())
            && let Some(credential) = call_helper(helper, &server_url, deadline)?
        {
            return Ok(Some((credential, CredentialSource::Helper(helper.clone()))));
        }
        // The key docker writes first (what `hoist login` and `docker login`
        // store), then legacy spellings of the same host.
        let entry = self
            .auths
            .get(&server_url)
            .or_else(|| self.auths.iter().find(|(key, _)| keys.contains(&normalize_key(key))).map(|(_, entry)| entry));
        let Some(entry) = entry else { return Ok(None) };
        Ok(entry.credential(path)?.map(|c| (c, CredentialSource::File(path.to_owned()))))
    }
}

impl AuthEntry {
    fn credential(&self, path: &Path) -> Result<Option<Credential>, RegistryError> {
        let (mut username, mut password) = (self.username.clone(), self.password.clone());
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| config_error(path, "an `auth` value is not base64 of `user:password`"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| config_error(path, "an `auth` value has no `:` between user and password"))?;
            username = Some(user.to_owned());
            // docker-cli once padded passwords with NULs; others trim them too.
            password = Some(pass.trim_end_matches('\0').to_owned());
        }
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken { username, token: Secret::new(token) }));
        }
        if let Some(token) = self.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(Secret::new(token))));
        }
        Ok(match (username, password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Some(Credential::Basic { username, password: Secret::new(password) })
            }
            _ => None,
        })
    }
}

/// The keys under which `registry` may be filed, the canonical one first
/// (the one docker passes to helpers).
fn lookup_keys(registry: &str) -> Vec<String> {
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        return vec![
            DOCKER_HUB_KEY.to_owned(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![registry.to_owned()]
}

/// `https://host:5000/v1/` → `host:5000`, as docker-cli's `ConvertToHostname`
/// does for legacy keys; Docker Hub's URL key stays as it is.
fn normalize_key(key: &str) -> String {
    if key == DOCKER_HUB_KEY {
        return key.to_owned();
    }
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    secret: String,
}

/// Runs `docker-credential-<helper> get` with `server_url` on stdin.
/// Written by hand: the protocol is one process call and one JSON object,
/// and the crates that wrap it do not report "not found" apart from failure.
fn call_helper(helper: &str, server_url: &str, deadline: Duration) -> Result<Option<Credential>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let failed = |detail: String| {
        RegistryError::new(ErrorKind::Local, format!("get credentials for {server_url} from {program}"))
            .with_detail(detail)
            .with_hint(format!("check that `{program}` is installed and logged in, or remove it from config.json"))
    };
    let output = helper_process(&program, "get", server_url, Stdio::inherit(), deadline).map_err(failed)?;
    if !output.status.success() {
        if String::from_utf8_lossy(&output.stdout).trim() == HELPER_NOT_FOUND {
            return Ok(None);
        }
        return Err(failed(format!("it failed ({}): {}", output.status, helper_said(&output.stdout))));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("its answer is not the JSON expected: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if answer.username == IDENTITY_TOKEN_USER {
        Credential::IdentityToken { username: None, token: Secret::new(answer.secret) }
    } else {
        Credential::Basic { username: answer.username, password: Secret::new(answer.secret) }
    }))
}

/// How long a credential helper may take by default.
pub const HELPER_DEADLINE: Duration = Duration::from_secs(60);
/// The most kept of what a helper prints: its answer is one small JSON object.
const HELPER_OUTPUT_MAX: u64 = 64 * 1024;

/// Runs `program verb` with `input` on its stdin, to its end or `deadline`
/// (then it is killed). Helpers speak one request and one answer; their
/// stderr goes where `stderr` says; of what they print, the first
/// [`HELPER_OUTPUT_MAX`] bytes are kept.
fn helper_process(
    program: &str,
    verb: &str,
    input: &str,
    stderr: Stdio,
    deadline: Duration,
) -> Result<std::process::Output, String> {
    let mut child = Command::new(program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is its own business.
        let _ = stdin.write_all(input.as_bytes());
    }
    let stdout = child.stdout.take().map(read_capped);
    let stderr = child.stderr.take().map(read_capped);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("it did not answer within {} s, so it was stopped", deadline.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let joined = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(std::process::Output { status, stdout: joined(stdout), stderr: joined(stderr) })
}

/// Reads a pipe on a thread of its own: the first [`HELPER_OUTPUT_MAX`]
/// bytes kept, the rest drained so the writer is never blocked.
fn read_capped(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(HELPER_OUTPUT_MAX).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        kept
    })
}

/// What a helper printed, for an error: helpers print their error on
/// stdout and it names no secret (the secret goes in on stdin), but it is
/// kept short and printable.
pub(crate) fn helper_said(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout).trim().chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn config_error(path: &Path, detail: &str) -> RegistryError {
    RegistryError::new(ErrorKind::Local, format!("read credentials from {}", path.display()))
        .with_detail(detail.to_owned())
        .with_hint("fix or move the file (docker and podman would refuse it too)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Credential::Basic { username: "u".into(), password: Secret::new("hunter2") };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn auths_entries_are_decoded_and_matched_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss\0");
        let path = write(
            dir.path(),
            &format!(
                r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"identitytoken":"refresh-me"}},
                "tok.example":{{"registrytoken":"ready"}}}}}}"#
            ),
        );
        let store = CredentialStore::anonymous().with_docker_config(&path);
        let (c, source) = store.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!(c, Credential::Basic { username: "alice".into(), password: Secret::new("pa:ss") });
        assert_eq!(source, CredentialSource::File(path.clone()));
        let (c, _) = store.lookup("docker.io").unwrap().unwrap();
        assert_eq!(c, Credential::IdentityToken { username: None, token: Secret::new("refresh-me") });
        assert_eq!(store.lookup("tok.example").unwrap().unwrap().0, Credential::RegistryToken(Secret::new("ready")));
        assert!(store.lookup("other.example").unwrap().is_none());
    }

    #[test]
    fn explicit_credentials_win_and_missing_files_are_anonymous() {
        let explicit = Credential::Basic { username: "u".into(), password: Secret::new("p") };
        let store =
            CredentialStore::anonymous().with_docker_config("/nonexistent/config.json").with_explicit(explicit.clone());
        assert_eq!(store.lookup("r").unwrap().unwrap(), (explicit, CredentialSource::Explicit));
        let store = CredentialStore::anonymous().with_docker_config("/nonexistent/config.json");
        assert!(store.lookup("r").unwrap().is_none());
    }

    #[test]
    fn docker_config_comes_before_podman() {
        let dir = tempfile::tempdir().unwrap();
        let docker = write(dir.path(), r#"{"auths":{}}"#);
        let podman = dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("pod:man");
        std::fs::write(&podman, format!(r#"{{"auths":{{"r:1":{{"auth":"{auth}"}}}}}}"#)).unwrap();
        let store = CredentialStore::anonymous().with_docker_config(&docker).with_podman_auth(&podman);
        let (c, source) = store.lookup("r:1").unwrap().unwrap();
        assert_eq!(c, Credential::Basic { username: "pod".into(), password: Secret::new("man") });
        assert_eq!(source, CredentialSource::File(podman));
    }

    #[test]
    fn malformed_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "{not json");
        let error = CredentialStore::anonymous().with_docker_config(&path).lookup("r").unwrap_err();
        assert!(error.to_string().contains("config.json"), "{error}");
        let path = write(dir.path(), r#"{"auths":{"r":{"auth":"!!!"}}}"#);
        assert!(CredentialStore::anonymous().with_docker_config(&path).lookup("r").is_err());
    }

    #[test]
    fn an_empty_file_holds_no_logins_as_hoist_login_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), " \n");
        assert!(CredentialStore::anonymous().with_docker_config(&path).lookup("r").unwrap().is_none());
    }
}
