//! Writing logins as `docker login` and `docker logout` do, so that docker,
//! podman, skopeo and hoist itself read them back.
//!
//! docker's `config.json` (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): a login for a registry goes to the
//! `credHelpers` helper named for it, else the `credsStore` helper, else the
//! file's `auths` (`auth`: base64 of `user:password`). With a helper, the
//! file keeps an empty `auths` entry for the registry, as docker writes
//! (docker/cli `cli/config/credentials/native_store.go` `Store`). Helpers
//! are `docker-credential-<name>` programs: `store` with `{"ServerURL",
//! "Username", "Secret"}` on stdin, `erase` with the server on stdin.
//!
//! The file is read as JSON values and written back with only the one entry
//! changed: every other entry and every field hoist does not know stays.
//! It is replaced atomically (a temporary file beside it, renamed over it,
//! through a symlink to its target as docker does) and is private to the
//! user (mode 0600; its directory, if made, 0700): it holds passwords.
//!
//! Registries are keyed as docker keys them: Docker Hub as
//! `https://index.docker.io/v1/`, others as `host[:port]`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{DOCKER_HUB_KEY, HELPER_NOT_FOUND, Secret, config_error};
use crate::{ErrorKind, RegistryError};

/// Where a login was put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// In the file's `auths`, base64-encoded but not encrypted.
    File(PathBuf),
    /// In `docker-credential-<name>`.
    Helper(String),
}

/// What a logout removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    /// Keys removed from the file's `auths`.
    pub file_entries: Vec<String>,
    /// The helper that held the login and erased it.
    pub helper: Option<String>,
}

impl Erased {
    /// True when there was nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.file_entries.is_empty() && self.helper.is_none()
    }
}

/// docker's `config.json` as the environment names it: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("DOCKER_CONFIG")
        .map(|dir| dir.join("config.json"))
        .or_else(|| var("HOME").map(|home| home.join(".docker/config.json")))
}

/// The key docker files `registry` (`host[:port]`, or a Docker Hub name) under.
pub fn server_key(registry: &str) -> String {
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// Stores `username` and `password` for `registry` as docker would: through
/// the helper the config names for it, else in the file.
pub fn store(config: &Path, registry: &str, username: &str, password: &Secret) -> Result<Stored, RegistryError> {
    let key = server_key(registry);
    let mut document = load(config)?;
    let helper = helper_for(&document, &key);
    let auths = auths_mut(config, &mut document)?;
    if let Some(helper) = helper {
        let input = serde_json::json!({ "ServerURL": key, "Username": username, "Secret": password.expose() });
        run_helper(&helper, "store", &input.to_string(), &key)?;
        // docker keeps an empty entry, so that the file still lists the registry.
        if !auths.contains_key(&key) {
            auths.insert(key, Value::Object(Map::new()));
            save(config, &document)?;
        }
        return Ok(Stored::Helper(helper));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    auths.insert(key, serde_json::json!({ "auth": encoded }));
    save(config, &document)?;
    Ok(Stored::File(config.to_owned()))
}

/// Removes what is stored for `registry`, as `docker logout` does: from the
/// helper the config names for it, and from the file's `auths` under every
/// spelling docker ever used for it (`host`, `http://host`, `https://host`).
pub fn erase(config: &Path, registry: &str) -> Result<Erased, RegistryError> {
    let key = server_key(registry);
    let mut document = load(config)?;
    let mut erased = Erased::default();
    if let Some(helper) = helper_for(&document, &key)
        && run_helper(&helper, "erase", &key, &key)?
    {
        erased.helper = Some(helper);
    }
    let spellings = if key == DOCKER_HUB_KEY {
        vec![key.clone()]
    } else {
        vec![key.clone(), format!("http://{key}"), format!("https://{key}")]
    };
    let auths = auths_mut(config, &mut document)?;
    let before: Vec<String> = auths.keys().cloned().collect();
    // Legacy entries are URLs with a path (`https://host:5000/v1/`): docker
    // matches them by host too.
    auths.retain(|k, _| !(spellings.contains(k) || (k.contains("://") && super::normalize_key(k) == key)));
    erased.file_entries = before.into_iter().filter(|k| !auths.contains_key(k)).collect();
    if !erased.file_entries.is_empty() {
        save(config, &document)?;
    }
    Ok(erased)
}

/// The config as a JSON object; a missing file is an empty one.
fn load(config: &Path) -> Result<Value, RegistryError> {
    let text = match std::fs::read(config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Value::Object(Map::new())),
        Err(e) => return Err(config_error(config, &e.to_string())),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_json::from_slice(&text).map_err(|e| config_error(config, &e.to_string()))?;
    if !value.is_object() {
        return Err(config_error(config, "it is not a JSON object"));
    }
    Ok(value)
}

fn auths_mut<'a>(config: &Path, document: &'a mut Value) -> Result<&'a mut Map<String, Value>, RegistryError> {
    let object = document.as_object_mut().ok_or_else(|| config_error(config, "it is not a JSON object"))?;
    object
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| config_error(config, "its `auths` is not a JSON object"))
}

/// The helper for `key`: its `credHelpers` entry, else `credsStore`.
fn helper_for(document: &Value, key: &str) -> Option<String> {
    let named = |v: Option<&Value>| v.and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_owned);
    named(document.get("credHelpers").and_then(|h| h.get(key))).or_else(|| named(document.get("credsStore")))
}

/// Writes `document` over `config` atomically, private to the user.
fn save(config: &Path, document: &Value) -> Result<(), RegistryError> {
    let failed = |e: &dyn std::fmt::Display| {
        RegistryError::new(ErrorKind::Local, format!("write credentials to {}", config.display()))
            .with_detail(e.to_string())
            .with_hint("check that the directory is writable (and has room)")
    };
    // A symlinked config (dotfile managers do that) is written at its target, as docker does.
    let target = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| failed(&e))?;
    }
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    serde::Serialize::serialize(document, &mut serializer).map_err(|e| failed(&e))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".config.json.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| failed(&e))?;
    temp.write_all(&bytes).and_then(|()| temp.as_file().sync_all()).map_err(|e| failed(&e))?;
    temp.persist(&target).map_err(|e| failed(&e.error))?;
    Ok(())
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin. `Ok(false)`
/// when the helper says it holds nothing for the server.
fn run_helper(helper: &str, verb: &str, input: &str, server: &str) -> Result<bool, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let failed = |detail: String| {
        RegistryError::new(ErrorKind::Local, format!("{verb} credentials for {server} with {program}"))
            .with_detail(detail)
            .with_hint(format!("check that `{program}` is installed and works, or remove it from config.json"))
    };
    // The helper's stderr is kept out of the terminal: what it says goes in the error.
    let output =
        super::helper_process(&program, verb, input, Stdio::piped(), super::HELPER_DEADLINE).map_err(failed)?;
    if output.status.success() {
        return Ok(true);
    }
    if verb == "erase" && String::from_utf8_lossy(&output.stdout).trim() == HELPER_NOT_FOUND {
        return Ok(false);
    }
    Err(failed(format!("it failed ({}): {}", output.status, super::helper_said(&output.stdout))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_login_is_written_private_and_everything_else_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("docker/config.json");
        let stored = store(&config, "reg.example:5000", "alice", &Secret::new("pa:ss")).unwrap();
        assert_eq!(stored, Stored::File(config.clone()));
        assert_eq!(mode(&config), 0o600);
        assert_eq!(mode(config.parent().unwrap()), 0o700);
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(read(&config), serde_json::json!({ "auths": { "reg.example:5000": { "auth": auth } } }));

        // Fields hoist does not know, and other registries' entries, stay as they were.
        let before = serde_json::json!({
            "auths": {
                "other.example": { "auth": "b3RoZXI6cHc=", "email": "o@example" },
                "reg.example:5000": { "auth": "c3RhbGU6c3RhbGU=", "identitytoken": "old" }
            },
            "psFormat": "table {{.ID}}",
            "proxies": { "default": { "httpProxy": "http://proxy:3128" } },
            "plugins": { "x": { "y": [1, 2, { "z": null }] } }
        });
        std::fs::write(&config, serde_json::to_vec(&before).unwrap()).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        store(&config, "reg.example:5000", "bob", &Secret::new("new")).unwrap();
        let mut expected = before.clone();
        expected["auths"]["reg.example:5000"] =
            serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode("bob:new") });
        assert_eq!(read(&config), expected);
        assert_eq!(mode(&config), 0o600, "the file holds passwords");
        // Nothing but config.json is left in the directory.
        let names: Vec<_> = std::fs::read_dir(config.parent().unwrap()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // What was stored is what a lookup finds.
        let found = super::super::CredentialStore::anonymous().with_docker_config(&config).lookup("reg.example:5000");
        assert_eq!(
            found.unwrap().unwrap().0,
            super::super::Credential::Basic { username: "bob".into(), password: Secret::new("new") }
        );
    }

    #[test]
    fn docker_hub_is_keyed_as_docker_keys_it() {
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_key("registry-1.docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        store(&config, "docker.io", "u", &Secret::new("p")).unwrap();
        assert!(read(&config)["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
    }

    #[test]
    fn a_logout_removes_every_spelling_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let json = serde_json::json!({
            "auths": {
                "reg.example": { "auth": "YTpi" },
                "https://reg.example": { "auth": "YTpi" },
                "https://reg.example/v1/": { "auth": "YTpi" },
                "reg.example:5000": { "auth": "YTpi" },
                "other.example": { "auth": "YTpi" }
            },
            "credHelpers": {}
        });
        std::fs::write(&config, json.to_string()).unwrap();
        let erased = erase(&config, "reg.example").unwrap();
        assert_eq!(erased.file_entries.len(), 3, "{erased:?}");
        let left = read(&config);
        let keys: Vec<&String> = left["auths"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["other.example", "reg.example:5000"]);
        assert_eq!(left["credHelpers"], serde_json::json!({}));
        // Again: nothing left to remove, and the file is not rewritten.
        assert!(erase(&config, "reg.example").unwrap().is_empty());
        assert!(erase(&dir.path().join("missing.json"), "reg.example").unwrap().is_empty());
    }

    #[test]
    fn a_malformed_config_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        for bad in ["{not json", "[1, 2]", r#"{"auths": []}"#] {
            std::fs::write(&config, bad).unwrap();
            let error = store(&config, "r.example", "u", &Secret::new("p")).unwrap_err();
            assert!(error.to_string().contains("config.json"), "{error}");
            assert_eq!(std::fs::read_to_string(&config).unwrap(), bad);
        }
    }

    #[test]
    fn a_symlinked_config_is_written_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/docker.json");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "{}").unwrap();
        let link = dir.path().join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        store(&link, "r.example", "u", &Secret::new("p")).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(read(&real)["auths"]["r.example"].is_object());
    }
}
