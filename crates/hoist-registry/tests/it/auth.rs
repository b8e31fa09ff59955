//! The registry client's authentication against a real distribution
//! registry in token mode, with the testkit's token issuer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hoist_oci::{Digest, Reference};
use hoist_registry::{
    BytesSource, Client, ClientOptions, Credential, CredentialStore, ErrorKind, Repository, Secret, UploadAction,
    UploadOptions,
};
use hoist_testkit::{IssuerConfig, TestRegistry, TokenIssuer};

const USER: &str = "tess";
const PASSWORD: &str = "s3cret-for-tokens";

fn client(credentials: CredentialStore) -> Client {
    Client::new(ClientOptions { credentials, ..ClientOptions::default() }).unwrap()
}

fn basic() -> CredentialStore {
    CredentialStore::anonymous()
        .with_explicit(Credential::Basic { username: USER.into(), password: Secret::new(PASSWORD) })
}

fn reference(registry: &TestRegistry, path: &str) -> Reference {
    Reference::parse(&format!("{}/{path}:1", registry.host())).unwrap()
}

/// The issuer says its tokens last 60 s, but the registry rejects them after
/// 2 s: only the 401 path (answer the challenge, resend) keeps requests
/// working. The loop runs until a second token has been issued, which can
/// only happen through that path; every request in it must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_dies_early_is_replaced_on_401_and_the_request_resent() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD).lifetime(2).stated_lifetime(60));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let repo = client(basic()).repository(&reference(&registry, "team/app"));
    let bytes = Bytes::from_static(b"a blob that outlives its token");
    let digest = Digest::of(&bytes);
    assert_eq!(upload(&repo, bytes).await, UploadAction::Uploaded);
    let first = issuer.issued().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut requests = 0;
    while issuer.issued().len() == first {
        assert!(Instant::now() < deadline, "no second token after {requests} requests");
        let found = repo.blob_exists(&digest).await.unwrap();
        assert!(found.is_some(), "HEAD {requests} must see the blob");
        requests += 1;
        tokio::task::yield_now().await;
    }
    let tokens = issuer.issued();
    assert!(tokens.iter().all(|i| i.scopes == "repository:team/app:pull,push"), "{tokens:?}");
    assert_eq!(issuer.refused(), 0);
}

/// The mount asks for pull on its source in the same token request, so
/// distribution (which checks per-repository scopes) mounts instead of
/// silently opening an upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_asks_for_pull_on_its_source_in_the_same_token() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let client = client(basic());
    let bytes = Bytes::from_static(b"mounted, not sent again");
    upload(&client.repository(&reference(&registry, "team/src")), bytes.clone()).await;
    let dst = client.repository(&reference(&registry, "team/dst"));
    let options = UploadOptions { mount_from: Some("team/src".into()), ..UploadOptions::default() };
    let outcome = dst.upload_blob(&BytesSource::new(bytes), &options).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Mounted);
    let scopes: Vec<String> = issuer.issued().iter().map(|i| i.scopes.clone()).collect();
    assert!(scopes.iter().any(|s| s == "repository:team/dst:pull,push repository:team/src:pull"), "{scopes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_requests_while_it_lives() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD).access_token_field());
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let client = client(basic());
    for n in 0..5 {
        let bytes = Bytes::from(format!("blob {n}"));
        // A new handle each time: the session is the client's, per registry.
        let repo = client.repository(&reference(&registry, "team/app"));
        upload(&repo, bytes).await;
    }
    assert_eq!(issuer.issued().len(), 1, "tokens are cached per scope (access_token accepted)");
}

fn docker_config(dir: &std::path::Path, json: &str) -> CredentialStore {
    std::fs::write(dir.join("config.json"), json).unwrap();
    CredentialStore::anonymous().with_docker_config(dir.join("config.json"))
}

/// Pushes a blob with an identity token from config.json through `issuer`;
/// returns the methods of the token requests it saw.
async fn identity_token_push(config: IssuerConfig) -> Vec<&'static str> {
    let issuer = TokenIssuer::start(config.identity_token("refresh-abc"));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let dir = tempfile::tempdir().unwrap();
    let store = docker_config(
        dir.path(),
        &format!(r#"{{"auths":{{"{}":{{"identitytoken":"refresh-abc"}}}}}}"#, registry.host()),
    );
    let repo = client(store).repository(&reference(&registry, "team/app"));
    let bytes = Bytes::from_static(b"via an identity token");
    upload(&repo, bytes).await;
    issuer.issued().iter().map(|i| i.method).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_is_exchanged_with_an_oauth2_post() {
    assert_eq!(identity_token_push(IssuerConfig::default()).await, ["POST"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_oauth2_the_identity_token_goes_by_get() {
    assert_eq!(identity_token_push(IssuerConfig::default().without_oauth_post()).await, ["GET"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_an_auth_error_with_a_hint_naming_their_source() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let store = CredentialStore::anonymous()
        .with_explicit(Credential::Basic { username: USER.into(), password: Secret::new("wrong") });
    let error =
        client(store).repository(&reference(&registry, "team/app")).blob_exists(&Digest::of(b"x")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(error.hint().unwrap().contains("refused the credentials from --username"), "{:?}", error.hint());
    assert!(!error.to_string().contains("wrong"), "{error}");
}

/// A realm on plain HTTP at a host that is not loopback must not get the
/// password: the request fails before any connection is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_to_a_plain_http_realm_elsewhere() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth_with_realm(&issuer, "http://192.0.2.1:9/token").start();
    let error =
        client(basic()).repository(&reference(&registry, "team/app")).blob_exists(&Digest::of(b"x")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(error.to_string().contains("refusing to send the credentials"), "{error}");
    // `--plain-http` names the registry, not its token service: it cannot help.
    let hint = error.hint().unwrap();
    assert!(hint.contains("192.0.2.1") && hint.contains("HTTPS") && !hint.contains("--plain-http"), "{hint}");
    assert!(issuer.issued().is_empty());
}

/// Eight requests start at once on a fresh session: all get 401, and all
/// are served by the one token the first of them fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_token_fetch() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    let repo = client(basic()).repository(&reference(&registry, "team/app"));
    let checks = (0..8u8).map(|n| {
        let repo = repo.clone();
        tokio::spawn(async move { repo.blob_exists(&Digest::of(&[n])).await })
    });
    for check in checks.collect::<Vec<_>>() {
        assert_eq!(check.await.unwrap().unwrap(), None);
    }
    assert_eq!(issuer.issued().len(), 1);
}

/// docker's `registrytoken`: a bearer token for the registry itself, sent
/// as it is, with no token request of our own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_token_from_docker_config_is_sent_as_is() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let registry = TestRegistry::builder().token_auth(&issuer).start();
    // hoist's own clients install the crypto provider; this bare one comes first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = reqwest::Client::new()
        .get(format!("{}?service={}&scope=repository:team/app:pull,push", issuer.realm(), issuer.service()))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = answer["token"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        docker_config(dir.path(), &format!(r#"{{"auths":{{"{}":{{"registrytoken":"{token}"}}}}}}"#, registry.host()));
    let repo = client(store).repository(&reference(&registry, "team/app"));
    let bytes = Bytes::from_static(b"with a ready token");
    assert_eq!(upload(&repo, bytes).await, UploadAction::Uploaded);
    assert_eq!(issuer.issued().len(), 1, "only the token this test asked for");
}

/// Uploads `bytes` (HEAD first) and says what that took.
/// What `hoist login` asks before storing credentials: good ones pass,
/// wrong ones are an auth error, on a token registry (a token for no scope)
/// and on a basic one (`GET /v2/` with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_without_asking_for_any_scope() {
    let wrong = || {
        CredentialStore::anonymous()
            .with_explicit(Credential::Basic { username: USER.into(), password: Secret::new("wrong") })
    };
    let issuer = TokenIssuer::start(IssuerConfig::default().user(USER, PASSWORD));
    let token_registry = TestRegistry::builder().token_auth(&issuer).start();
    let probe = Reference::from_parts(&token_registry.host(), "v2", None).unwrap();
    client(basic()).check_credentials(&probe).await.unwrap();
    assert_eq!(issuer.issued().len(), 1);
    assert_eq!(issuer.issued()[0].scopes, "", "no scope is asked for");
    let error = client(wrong()).check_credentials(&probe).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert!(error.hint().unwrap().contains("refused the credentials from --username"), "{:?}", error.hint());

    let basic_registry = TestRegistry::builder().basic_auth(USER, PASSWORD).start();
    let probe = Reference::from_parts(&basic_registry.host(), "v2", None).unwrap();
    client(basic()).check_credentials(&probe).await.unwrap();
    let error = client(wrong()).check_credentials(&probe).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
}

async fn upload(repo: &Repository, bytes: Bytes) -> UploadAction {
    repo.upload_blob(&BytesSource::new(bytes), &UploadOptions::default()).await.unwrap().action
}
