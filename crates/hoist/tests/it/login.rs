//! `hoist login` and `hoist logout`: credentials checked against real
//! registries (htpasswd basic auth, token auth, the Harbor stand-in), then
//! stored as docker stores them (config.json, or a credential helper), and
//! used by every command after.

use std::path::Path;

use base64::Engine as _;
use hoist_testkit::harbor::{DEVELOPER, TestHarbor};
use hoist_testkit::{IssuerConfig, TestRegistry, TokenIssuer};

use crate::harbor::{Scene, read_config};
use crate::support::{Run, path_str, path_with, run, with_stdin};

const USER: &str = "login-user";
const PASSWORD: &str = "l0gin-pa55-never-shown";

fn login(scene: &Scene, registry: &str, user: &str, password: &str) -> Run {
    with_stdin(&mut scene.hoist(&["login", "--username", user, "--password-stdin", registry]), password)
}

fn push(scene: &Scene, dest: &str) -> Run {
    run(&mut scene.hoist(&["push", path_str(&scene.archive), dest]))
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

fn no_password_in(run: &Run, password: &str) {
    assert!(!run.stdout.contains(password) && !run.stderr.contains(password), "the password leaked: {run:?}");
}

#[test]
fn a_login_is_checked_stored_like_dockers_used_and_removed() {
    let registry = TestRegistry::builder().basic_auth(USER, PASSWORD).start();
    let scene = Scene::new();
    let config = scene.docker_config();
    let others = serde_json::json!({
        "auths": { "other.example": { "auth": "b3RoZXI6cHc=" } },
        "psFormat": "table {{.ID}}",
        "someFutureSetting": { "kept": [1, 2] }
    });
    std::fs::write(&config, others.to_string()).unwrap();

    let refused = login(&scene, &registry.host(), USER, "not-it");
    refused.fails_with(4, "401");
    no_password_in(&refused, "not-it");
    assert_eq!(read_config(&config), others, "refused credentials are not stored");

    let accepted = login(&scene, &registry.host(), USER, PASSWORD);
    accepted.success();
    assert!(accepted.stderr.contains("Login Succeeded"), "{}", accepted.stderr);
    assert!(accepted.stderr.contains("stored unencrypted"), "{}", accepted.stderr);
    no_password_in(&accepted, PASSWORD);
    assert_eq!(mode(&config), 0o600);
    let stored = read_config(&config);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert_eq!(stored["auths"][registry.host()], serde_json::json!({ "auth": auth }));
    assert_eq!(stored["auths"]["other.example"], others["auths"]["other.example"]);
    assert_eq!(stored["someFutureSetting"], others["someFutureSetting"]);
    assert_eq!(stored["psFormat"], others["psFormat"]);

    // No credential flags: the push uses what login stored.
    let dest = format!("{}/team/app:1.0", registry.host());
    push(&scene, &dest).success();

    let out = run(&mut scene.hoist(&["logout", &registry.host()]));
    out.success();
    assert!(out.stderr.contains(&format!("Removing login credentials for {}", registry.host())), "{}", out.stderr);
    assert_eq!(read_config(&config), others, "only the registry's entry went");
    push(&scene, &dest).fails_with(4, "401");
    let again = run(&mut scene.hoist(&["logout", &registry.host()]));
    again.success();
    assert!(again.stderr.contains("Not logged in"), "{}", again.stderr);
}

#[test]
fn a_token_registry_checks_the_login_with_its_token_service() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let scene = Scene::new();
    login(&scene, &registry.host(), USER, "wrong").fails_with(4, "token");
    assert!(!scene.docker_config().exists());
    login(&scene, &registry.host(), USER, PASSWORD).success();
    let login_tokens: Vec<_> = issuer.issued().into_iter().filter(|i| i.scopes.is_empty()).collect();
    assert_eq!(login_tokens.len(), 1, "login asks for a token for no scope");
    push(&scene, &format!("{}/team/app:1.0", registry.host())).success();
    let checks = issuer.issued().into_iter().filter(|i| i.scopes.is_empty()).count();
    assert_eq!(checks, 2, "the push checks the stored login the same way before it reads the archive");
}

#[test]
fn a_login_needs_a_user_and_a_password() {
    let scene = Scene::new();
    run(&mut scene.hoist(&["login", "127.0.0.1:9"])).fails_with(2, "needs a user name and a password");
    with_stdin(&mut scene.hoist(&["login", "-u", "x", "--password-stdin", "127.0.0.1:9"]), "\n")
        .fails_with(2, "empty password");
    run(&mut scene.hoist(&["login", "-u", "x", "--password", "p", "not a host"])).fails_with(2, "not a registry");
}

/// Writes `docker-credential-fake` into `bin`: a stand-in for a real helper
/// (pass, secretservice, osxkeychain) keeping one credential per server in
/// `store`, and noting each call with what came on stdin in `calls`.
fn fake_helper(bin: &Path, store: &Path, calls: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    std::fs::create_dir_all(store).unwrap();
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
printf '%s %s\n' "$1" "$input" >> '{calls}'
key=$(printf '%s' "$input" | sed -e 's/.*"ServerURL":"\([^"]*\)".*/\1/' | tr '/:' '__')
case "$1" in
  store) printf '%s' "$input" > '{store}'/"$key" ;;
  get)
    key=$(printf '%s' "$input" | tr '/:' '__')
    if [ -f '{store}'/"$key" ]; then cat '{store}'/"$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase)
    key=$(printf '%s' "$input" | tr '/:' '__')
    if [ -f '{store}'/"$key" ]; then rm '{store}'/"$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 1 ;;
esac
"#,
        calls = calls.display(),
        store = store.display()
    );
    crate::support::write_executable(&bin.join("docker-credential-fake"), &script);
}

#[test]
fn a_credential_helper_keeps_the_login_when_config_json_names_one() {
    let registry = TestRegistry::builder().basic_auth(USER, PASSWORD).start();
    let scene = Scene::new();
    let (bin, store, calls) =
        (scene.dir.path().join("bin"), scene.dir.path().join("keychain"), scene.dir.path().join("calls.log"));
    fake_helper(&bin, &store, &calls);
    std::fs::write(scene.docker_config(), r#"{"credsStore":"fake"}"#).unwrap();
    let host = registry.host();

    let accepted = with_stdin(
        scene.hoist(&["login", "-u", USER, "--password-stdin", &host]).env("PATH", path_with(&bin)),
        PASSWORD,
    );
    accepted.success();
    assert!(accepted.stderr.contains("Login Succeeded (stored by docker-credential-fake)"), "{}", accepted.stderr);
    assert!(!accepted.stderr.contains("unencrypted"), "{}", accepted.stderr);
    let logged = std::fs::read_to_string(&calls).unwrap();
    let stored: serde_json::Value = serde_json::from_str(logged.strip_prefix("store ").unwrap().trim()).unwrap();
    assert_eq!(stored, serde_json::json!({ "ServerURL": host, "Username": USER, "Secret": PASSWORD }));
    // docker keeps an empty entry in the file, and no secret there.
    let config = read_config(&scene.docker_config());
    assert_eq!(config, serde_json::json!({ "credsStore": "fake", "auths": { host.clone(): {} } }));

    let dest = format!("{host}/team/app:1.0");
    run(scene.hoist(&["push", path_str(&scene.archive), &dest]).env("PATH", path_with(&bin))).success();
    assert!(std::fs::read_to_string(&calls).unwrap().contains(&format!("get {host}")));

    let out = run(scene.hoist(&["logout", &host]).env("PATH", path_with(&bin)));
    out.success();
    assert!(std::fs::read_to_string(&calls).unwrap().contains(&format!("erase {host}")));
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0, "the helper forgot it");
    assert_eq!(read_config(&scene.docker_config()), serde_json::json!({ "credsStore": "fake", "auths": {} }));
    run(scene.hoist(&["push", path_str(&scene.archive), &dest]).env("PATH", path_with(&bin))).fails_with(4, "401");
}

/// `hoist login` to Harbor, then a push with no credential flags makes the
/// project and pushes; after `hoist logout` Harbor's API wants credentials.
#[test]
fn login_then_push_to_harbor_then_logout() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let refused = login(&scene, &harbor.host(), DEVELOPER.0, "Not-the-pass-1");
    refused.fails_with(4, "");
    no_password_in(&refused, "Not-the-pass-1");
    let accepted = login(&scene, &harbor.host(), DEVELOPER.0, DEVELOPER.1);
    accepted.success();
    no_password_in(&accepted, DEVELOPER.1);
    let dest = format!("{}/team/app:1.0", harbor.host());
    let pushed = push(&scene, &dest);
    pushed.success();
    assert!(pushed.stderr.contains("created project `team`"), "{}", pushed.stderr);
    run(&mut scene.hoist(&["logout", &harbor.host()])).success();
    let anonymous = push(&scene, &format!("{}/other/app:1.0", harbor.host()));
    anonymous.fails_with(4, "project `other`");
    assert!(anonymous.stderr.contains("hoist login"), "{}", anonymous.stderr);
}
