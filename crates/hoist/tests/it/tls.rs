//! `hoist push` over HTTPS to a real registry serving a certificate from a
//! generated CA: trust from `--ca-cert` or docker's `certs.d`, client
//! certificates (mTLS), and what an untrusted certificate looks like.
//! Also: the proxy environment variables are honoured.

use std::path::PathBuf;
use std::process::Command;

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, layer_tar};
use hoist_testkit::{IssuerConfig, TestCa, TestRegistry, TokenIssuer, tools};

use crate::support::{hoist, path_str, run};

struct Scene {
    dir: tempfile::TempDir,
    archive: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("app.tar");
        let image = ImageFixture::new().tag("app:1.0").layer(layer_tar(&[("etc/motd", b"over TLS\n")]));
        DockerSaveClassic::new().image(image).write_to(&archive);
        Self { dir, archive }
    }

    fn certs_d(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    fn push(&self, args: &[&str]) -> Command {
        let mut command = hoist();
        command
            .args(["push", path_str(&self.archive)])
            .args(args)
            .env("HOIST_CERTS_D", self.certs_d())
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("no-auth.json"));
        command
    }
}

/// skopeo, trusting only the test CA (no `--tls-verify=false`), reads the image back.
fn skopeo_verifies(reference: &str, ca: &TestCa, client: bool) {
    tools::require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(ca.ca_cert(), dir.path().join("ca.crt")).unwrap();
    if client {
        std::fs::copy(ca.client_cert(), dir.path().join("client.cert")).unwrap();
        std::fs::copy(ca.client_key(), dir.path().join("client.key")).unwrap();
    }
    let out = tools::run_ok(Command::new("skopeo").args([
        "inspect",
        "--cert-dir",
        path_str(dir.path()),
        &format!("docker://{reference}"),
    ]));
    assert!(out.contains("\"Digest\""), "{out}");
}

fn dest(registry: &TestRegistry) -> String {
    format!("{}/team/app:1.0", registry.host())
}

#[test]
fn https_with_a_ca_cert_flag() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    run(&mut scene.push(&[&dest(&registry), "--https", "--ca-cert", path_str(&ca.ca_cert())])).success();
    skopeo_verifies(&dest(&registry), &ca, false);
}

/// TLS and token auth together, as on any real registry: the token realm
/// is plain HTTP, but on loopback, so it is allowed.
#[test]
fn https_with_token_auth() {
    let ca = TestCa::generate();
    let issuer = TokenIssuer::start(IssuerConfig::default().user("tls-user", "tls-pass"));
    let registry = TestRegistry::builder().tls(&ca).token_auth(&issuer).start();
    let scene = Scene::new();
    let run = run(scene
        .push(&[&dest(&registry), "--https", "--ca-cert", path_str(&ca.ca_cert())])
        .env("HOIST_USERNAME", "tls-user")
        .env("HOIST_PASSWORD", "tls-pass"));
    run.success();
    // One token for the push, and one for no scope: the stored login checked
    // before the archive is read.
    assert_eq!(issuer.issued().iter().filter(|i| !i.scopes.is_empty()).count(), 1);
    assert_eq!(issuer.issued().len(), 2);
}

#[test]
fn a_ca_bundle_with_several_certificates_works() {
    let ca = TestCa::generate();
    let other = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    let bundle = scene.dir.path().join("bundle.pem");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(other.ca_cert()).unwrap(),
        std::fs::read_to_string(ca.ca_cert()).unwrap()
    );
    std::fs::write(&bundle, pem).unwrap();
    run(&mut scene.push(&["--registry", &format!("https://{}", registry.host()), "--ca-cert", path_str(&bundle)]))
        .success();
}

#[test]
fn https_with_docker_certs_d() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    // A certs.d entry for a loopback registry means HTTPS, no flag needed.
    ca.write_certs_d(&scene.certs_d(), &registry.host(), false);
    run(&mut scene.push(&[&dest(&registry)])).success();
    skopeo_verifies(&dest(&registry), &ca, false);
}

#[test]
fn mutual_tls_with_a_client_certificate_from_certs_d() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().require_client_cert(&ca).start();
    let scene = Scene::new();

    // Trusting the server is not enough: the registry wants a client certificate.
    ca.write_certs_d(&scene.certs_d(), &registry.host(), false);
    let refused = run(&mut scene.push(&[&dest(&registry)]));
    refused.fails_with(6, "");
    assert!(
        refused.stderr.contains("client certificate") || refused.stderr.contains("client.cert"),
        "{}",
        refused.stderr
    );

    ca.write_certs_d(&scene.certs_d(), &registry.host(), true);
    run(&mut scene.push(&[&dest(&registry)])).success();
    skopeo_verifies(&dest(&registry), &ca, true);
}

#[test]
fn an_untrusted_certificate_fails_with_a_tls_hint() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    let run = run(&mut scene.push(&[&dest(&registry), "--https"]));
    run.fails_with(6, "");
    let hint = run.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains("--ca-cert") && hint.contains("certs.d"), "{hint}");
}

#[test]
fn insecure_skips_verification() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    run(&mut scene.push(&[&dest(&registry), "--https", "--insecure"])).success();
}

/// A host with no CA store (`SSL_CERT_FILE` naming a file that does not
/// exist makes hoist look nowhere else): plain HTTP and `--ca-cert` work as
/// on any host, with one line saying that HTTPS trusts the built-in public
/// roots; a certificate none of those vouch for gets a hint that says why.
#[test]
fn without_a_system_ca_store_hoist_trusts_its_bundled_roots() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let plain = TestRegistry::start();
    let scene = Scene::new();
    let no_store = scene.dir.path().join("no-ca-certificates.crt");
    let notice = "no CA certificates on this machine";

    let push = run(scene.push(&[&dest(&plain)]).env("SSL_CERT_FILE", &no_store).env_remove("SSL_CERT_DIR"));
    push.success();
    assert!(!push.stderr.contains(notice), "plain HTTP needs no CA: {}", push.stderr);

    let push = run(scene
        .push(&[&dest(&registry), "--https", "--ca-cert", path_str(&ca.ca_cert())])
        .env("SSL_CERT_FILE", &no_store)
        .env_remove("SSL_CERT_DIR"));
    push.success();
    assert_eq!(push.stderr.matches(notice).count(), 1, "one notice: {}", push.stderr);

    let refused =
        run(scene.push(&[&dest(&registry), "--https"]).env("SSL_CERT_FILE", &no_store).env_remove("SSL_CERT_DIR"));
    refused.fails_with(6, "certificate");
    let hint = refused.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains("--ca-cert") && hint.contains("no CA certificates of its own"), "{hint}");
}

fn without_proxy_settings(command: &mut Command) -> &mut Command {
    for var in
        ["NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    {
        command.env_remove(var);
    }
    command
}

/// As with docker, loopback is never proxied: a proxy that does not exist
/// does not stop a push to a loopback registry, with no `NO_PROXY` set.
#[test]
fn loopback_registries_bypass_the_proxy() {
    let registry = TestRegistry::start();
    let scene = Scene::new();
    let dead_proxy = "http://127.0.0.1:9";
    let mut push = scene.push(&[&dest(&registry)]);
    without_proxy_settings(&mut push).env("HTTP_PROXY", dead_proxy).env("ALL_PROXY", dead_proxy);
    run(&mut push).success();
}

/// Other hosts do go through `HTTP_PROXY`, and `NO_PROXY` exempts them. The
/// registry's token realm is `http://token.hoist.invalid/token`, a name that
/// does not resolve; the token issuer doubles as the proxy (it answers
/// `GET http://any.host/token`), so the push works only through the proxy.
#[test]
fn other_hosts_go_through_http_proxy_unless_no_proxy_says_otherwise() {
    let issuer = TokenIssuer::start(IssuerConfig::default().anonymous());
    let registry = TestRegistry::builder().token_auth_with_realm(&issuer, "http://token.hoist.invalid/token").start();
    let scene = Scene::new();
    let proxy = issuer.realm().trim_end_matches("/token").to_owned();

    let mut push = scene.push(&[&dest(&registry)]);
    without_proxy_settings(&mut push).env("HTTP_PROXY", &proxy);
    run(&mut push).success();
    assert_eq!(issuer.issued().len(), 1, "the token request went through the proxy");

    let mut exempt = scene.push(&[&dest(&registry)]);
    without_proxy_settings(&mut exempt).env("HTTP_PROXY", &proxy).env("NO_PROXY", ".hoist.invalid");
    run(&mut exempt).fails_with(6, "token");
    assert_eq!(issuer.issued().len(), 1, "NO_PROXY kept the second push away from the proxy");
}

/// `--certs-dir` names the certs.d tree and wins over `HOIST_CERTS_D` (the
/// scene points that at an empty directory).
#[test]
fn the_certs_dir_flag_wins_over_the_environment() {
    let ca = TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let scene = Scene::new();
    let flagged = scene.dir.path().join("flagged.d");
    ca.write_certs_d(&flagged, &registry.host(), false);
    run(&mut scene.push(&[&dest(&registry), "--https"])).fails_with(6, "");
    run(&mut scene.push(&[&dest(&registry), "--https", "--certs-dir", path_str(&flagged)])).success();
    skopeo_verifies(&dest(&registry), &ca, false);
}
