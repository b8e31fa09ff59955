//! `hoist push` to registries that want credentials: htpasswd basic auth
//! and token auth (the testkit's issuer signing real JWTs), with
//! credentials from flags, the environment, docker's config.json (plain
//! `auths`, identity tokens, a credential helper) and podman's auth.json.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::{IssuerConfig, TestRegistry, TokenIssuer, tools};

use crate::support::{hoist, path_str, path_with, run, with_stdin};

const USER: &str = "hoist-user";
const PASSWORD: &str = "pa55-w0rd-never-printed";

/// A temp dir holding an archive and an empty credential world, so the
/// machine's own docker and podman logins never leak into a test.
struct Scene {
    dir: tempfile::TempDir,
    archive: PathBuf,
}

impl Scene {
    fn new(fixture: ImageFixture) -> Self {
        Self::with_images(vec![fixture])
    }

    fn with_images(images: Vec<ImageFixture>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("app.tar");
        let mut save = DockerSaveClassic::new();
        for image in images {
            save = save.image(image);
        }
        save.write_to(&archive);
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Self { dir, archive }
    }

    fn docker_config_dir(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    fn write_docker_config(&self, json: &str) {
        std::fs::write(self.docker_config_dir().join("config.json"), json).unwrap();
    }

    /// `hoist push ARCHIVE ARGS…` with the scene's credential files and nothing inherited.
    fn push(&self, args: &[&str]) -> Command {
        let mut command = hoist();
        command
            .args(["push", path_str(&self.archive)])
            .args(args)
            .env_remove("HOIST_USERNAME")
            .env_remove("HOIST_PASSWORD")
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("no-auth.json"))
            .env("HOIST_CERTS_D", self.dir.path().join("no-certs.d"));
        command
    }
}

fn image() -> ImageFixture {
    ImageFixture::new().tag("app:1.0").layer(layer_tar(&[("etc/motd", b"authenticated\n")]))
}

/// skopeo, with its own credentials, sees the image hoist printed.
fn skopeo_sees(reference: &str, stdout: &str) {
    tools::require("skopeo", "skopeo");
    let printed = stdout.lines().next().unwrap_or_default();
    let digest = printed.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    let out = tools::run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{reference}"),
    ]));
    let inspect: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspect["Digest"], digest, "skopeo sees what hoist printed ({printed})");
}

fn basic_registry() -> TestRegistry {
    TestRegistry::builder().basic_auth(USER, PASSWORD).start()
}

#[test]
fn basic_auth_with_password_stdin() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let run = with_stdin(&mut scene.push(&[&dest, "--username", USER, "--password-stdin"]), &format!("{PASSWORD}\n"));
    run.success();
    assert!(run.stdout.starts_with(&format!("{dest}@sha256:")), "{}", run.stdout);
    skopeo_sees(&dest, &run.stdout);
}

#[test]
fn basic_auth_from_the_environment() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let run = run(scene.push(&[&dest]).env("HOIST_USERNAME", USER).env("HOIST_PASSWORD", PASSWORD));
    run.success();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    skopeo_sees(&dest, &run.stdout);
}

#[test]
fn password_on_the_command_line_works_but_warns() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let run = run(&mut scene.push(&[&dest, "--username", USER, "--password", PASSWORD]));
    run.success();
    assert!(run.stderr.contains("warning: --password is visible"), "{}", run.stderr);
}

#[test]
fn a_wrong_password_exits_4_with_a_hint() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let run = with_stdin(&mut scene.push(&[&dest, "--username", USER, "--password-stdin"]), "not-the-password\n");
    run.fails_with(4, "401");
    let hint = format!("hint: {} refused the credentials from --username", registry.host());
    assert!(run.stderr.contains(&hint), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-password"), "{}", run.stderr);
}

#[test]
fn no_credentials_at_all_exits_4_with_a_hint() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let run = run(&mut scene.push(&[&format!("{}/team/app:1.0", registry.host())]));
    run.fails_with(4, "401");
    assert!(run.stderr.contains("--username"), "{}", run.stderr);
}

#[test]
fn a_username_without_a_password_is_a_usage_error() {
    let scene = Scene::new(image());
    run(&mut scene.push(&["127.0.0.1:9/app:1", "--username", USER])).fails_with(2, "needs a password");
}

#[test]
fn docker_config_auths_are_used_and_flags_win_over_them() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let auth = |user: &str, pass: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    scene.write_docker_config(&format!(
        r#"{{"auths":{{"http://{}/v1/":{{"auth":"{}"}}}}}}"#,
        registry.host(),
        auth(USER, PASSWORD)
    ));
    run(&mut scene.push(&[&dest])).success();

    // A stale stored password loses to the one given on the command line.
    scene.write_docker_config(&format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.host(),
        auth(USER, "stale")
    ));
    run(&mut scene.push(&[&dest])).fails_with(4, "401");
    with_stdin(&mut scene.push(&[&dest, "--username", USER, "--password-stdin"]), PASSWORD).success();
}

#[test]
fn podman_auth_json_is_used_when_docker_has_nothing() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let auth_file = scene.dir.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(&auth_file, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host())).unwrap();
    let dest = format!("{}/team/app:1.0", registry.host());
    run(scene.push(&[&dest]).env("REGISTRY_AUTH_FILE", &auth_file)).success();
}

/// Writes `docker-credential-fake` into `bin`: a stand-in for a real helper
/// (docker-credential-pass, -secretservice, -ecr-login), which needs a
/// keyring or a cloud account. It speaks the helper protocol: `get` with the
/// server URL on stdin, JSON on stdout, "not found" with a non-zero exit.
fn fake_helper(bin: &Path, server: &str, log: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
[ "$1" = get ] || exit 1
read -r url
echo "$url" >> '{log}'
if [ "$url" = '{server}' ]; then
  printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}' "$url"
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
        log = log.display()
    );
    crate::support::write_executable(&bin.join("docker-credential-fake"), &script);
}

#[test]
fn a_credential_helper_is_asked_with_the_server_on_stdin() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let bin = scene.dir.path().join("bin");
    let log = scene.dir.path().join("helper.log");
    fake_helper(&bin, &registry.host(), &log);
    let dest = format!("{}/team/app:1.0", registry.host());

    scene.write_docker_config(&format!(r#"{{"credHelpers":{{"{}":"fake"}}}}"#, registry.host()));
    run(scene.push(&[&dest]).env("PATH", path_with(&bin))).success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{}\n", registry.host()));

    scene.write_docker_config(r#"{"credsStore":"fake"}"#);
    run(scene.push(&[&dest]).env("PATH", path_with(&bin))).success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{0}\n{0}\n", registry.host()));

    // credHelpers names the helper per registry; "not found" means anonymous.
    scene.write_docker_config(r#"{"credHelpers":{"other.example":"fake"},"credsStore":"fake"}"#);
    let other = format!("{}/team/app:1.0", registry.localhost());
    run(scene.push(&[&other]).env("PATH", path_with(&bin))).fails_with(4, "401");
}

/// Tokens live 1 s at the registry (and the issuer says so; hoist renews
/// after two thirds of that); the push holds one large incompressible layer
/// that takes well over a second to compress at level 9, and
/// the config blob and manifest come after it, so the session must renew
/// its token in the middle of the push.
#[test]
fn token_auth_renews_short_lived_tokens_during_a_push() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD).lifetime(1));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let image = ImageFixture::new().tag("big:1").layer(incompressible_layer(9, 80 * 1024 * 1024));
    let scene = Scene::new(image);
    let dest = format!("{}/team/big:1", registry.host());
    let run = with_stdin(
        &mut scene.push(&[&dest, "--username", USER, "--password-stdin", "--compression", "gzip:9", "--no-cache"]),
        PASSWORD,
    );
    run.success();
    let tokens = issuer.issued();
    let push_tokens = tokens.iter().filter(|i| i.scopes == "repository:team/big:pull,push").count();
    assert!(push_tokens >= 2, "one token per second of pushing, got {tokens:?}");
    assert_eq!(issuer.refused(), 0);
    skopeo_sees(&dest, &run.stdout);
}

#[test]
fn token_auth_with_a_wrong_password_exits_4() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let scene = Scene::new(image());
    let dest = format!("{}/team/app:1.0", registry.host());
    let run = with_stdin(&mut scene.push(&[&dest, "--username", USER, "--password-stdin"]), "wrong");
    run.fails_with(4, "token");
    assert!(run.stderr.contains("refused the credentials"), "{}", run.stderr);
    assert!(issuer.refused() >= 1);
}

/// Debug logging of everything (`-v -v`) through basic and token auth, and
/// trace logging through an OAuth2 identity-token exchange: no password, no
/// basic header, no identity token, no token an issuer signed appears
/// anywhere.
#[test]
fn secrets_never_appear_in_debug_output() {
    let scene =
        Scene::with_images(vec![image(), ImageFixture::new().tag("two:1").layer(incompressible_layer(3, 300_000))]);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut secrets = vec![PASSWORD.to_owned(), basic];

    let registry = basic_registry();
    let run_basic = with_stdin(
        &mut scene.push(&["-v", "-v", "--username", USER, "--password-stdin", "--registry", &registry.host()]),
        PASSWORD,
    );
    run_basic.success();

    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD).lifetime(2));
    let token_registry = TestRegistry::builder().token_auth(&issuer).start();
    let run_token = run(scene
        .push(&["-v", "-v", "--registry", &token_registry.host()])
        .env("HOIST_USERNAME", USER)
        .env("HOIST_PASSWORD", PASSWORD));
    run_token.success();
    // An identity token from docker's config.json, exchanged by OAuth2 POST, at trace level.
    let identity = "identity-token-never-printed";
    let oauth_issuer = TokenIssuer::start(IssuerConfig::default().identity_token(identity));
    let oauth_registry = TestRegistry::builder().token_auth(&oauth_issuer).start();
    scene.write_docker_config(&format!(
        r#"{{"auths":{{"{}":{{"identitytoken":"{identity}"}}}}}}"#,
        oauth_registry.host()
    ));
    let run_oauth = run(scene.push(&["--registry", &oauth_registry.host()]).env("HOIST_LOG", "trace"));
    run_oauth.success();
    assert!(oauth_issuer.issued().iter().all(|i| i.method == "POST"), "{:?}", oauth_issuer.issued());
    assert!(run_oauth.stderr.contains("trace: "), "trace logging is on");

    let tokens = issuer.secrets();
    assert!(!tokens.is_empty());
    secrets.extend(tokens);
    secrets.extend(oauth_issuer.secrets());
    secrets.push(identity.to_owned());

    for run in [&run_basic, &run_token, &run_oauth] {
        assert!(run.stderr.contains("debug: "), "debug logging is on: {}", run.stderr);
        for secret in &secrets {
            let text = format!("{}{}", run.stdout, run.stderr);
            assert!(!text.contains(secret.as_str()), "a secret leaked into the output:\n{text}");
            // A JWT's signature alone would leak nothing useful, but its payload part is the token too.
            if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
                assert!(!text.contains(signature), "a token signature leaked");
            }
        }
    }
}

#[test]
fn refused_credentials_are_said_before_the_archive_is_read() {
    // Pushed from standard input with no DEST, the layers would be staged
    // first: the credentials are checked before a byte of the stream is read.
    let registry = basic_registry();
    let proxy = hoist_testkit::FaultProxy::start(registry.port(), vec![]);
    let archive = DockerSaveClassic::new().image(image()).build();
    let run = crate::support::hoist_stdin(
        &["push", "-", "--registry", &proxy.host(), "--username", USER, "--password", "not-the-password"],
        archive,
        None,
    );
    run.fails_with(4, "401");
    assert!(!run.stderr.contains("staged"), "nothing was staged: {}", run.stderr);
    assert_eq!(proxy.count("POST", "/blobs/uploads"), 0, "no upload was started");
}

#[test]
fn a_credential_helper_that_never_answers_is_stopped() {
    let registry = basic_registry();
    let scene = Scene::new(image());
    let bin = scene.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Waits as a keychain prompt nobody answers would, and prints far more than an answer.
    crate::support::write_executable(
        &bin.join("docker-credential-stuck"),
        "#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' 'x'\nexec sleep 600\n",
    );
    scene.write_docker_config(r#"{"credsStore":"stuck"}"#);
    let dest = format!("{}/team/app:1.0", registry.host());
    let started = std::time::Instant::now();
    let run = run(scene.push(&[&dest, "--timeout", "1"]).env("PATH", path_with(&bin)));
    run.fails_with(10, "did not answer within 2 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "stopped at its deadline");
    assert!(run.stderr.len() < 5000, "what it printed is not all repeated: {} bytes", run.stderr.len());
}
