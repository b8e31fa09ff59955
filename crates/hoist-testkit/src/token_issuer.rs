//! A small token server for distribution's `auth: token` mode.
//!
//! It stands for a real registry token service (Docker Hub's
//! auth.docker.io, Harbor's /service/token, ACR's /oauth2/token): nothing
//! installable here speaks that protocol, so the testkit runs its own. The
//! tokens are real: ES256 JWTs signed with a generated key whose
//! self-signed certificate rides in the `x5c` header and is the registry's
//! `rootcertbundle`, so the real registry verifies every one.
//!
//! - `GET /token?service=…&scope=…&scope=…` with HTTP Basic (a user's
//!   password, or an identity token as the password);
//! - `POST /token` with an OAuth2 form: `grant_type=refresh_token` (an
//!   identity or refresh token) or `grant_type=password`; can be switched
//!   off to answer 405 like Harbor, so clients must fall back to GET.
//!
//! The server routes on the path alone, so it also answers requests sent
//! to it as an HTTP proxy (`GET http://any.host/token`): tests use that to
//! see whether a client sends a request through `HTTP_PROXY`.
//!
//! Tokens can be short-lived, and can lie about their lifetime (say 60 s,
//! die after 2) to force a client onto its 401 path. Every token and refresh
//! token handed out is recorded, so tests can grep output for them.
//!
//! distribution accepts tokens up to 60 s past their `exp` (its `Leeway`),
//! so `exp` is set 60 s early to make the lifetime real.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;

use crate::jwt::Signer;

const LEEWAY: u64 = 60;
const SERVICE: &str = "hoist-test-registry";
const ISSUER: &str = "hoist-test-issuer";

/// How the issuer behaves. `Default`: no users, 60 s tokens, OAuth2 on.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    users: Vec<(String, String)>,
    identity_tokens: Vec<String>,
    lifetime: u64,
    stated_lifetime: Option<u64>,
    oauth_post: bool,
    access_token_field: bool,
    anonymous: bool,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            identity_tokens: Vec::new(),
            lifetime: 60,
            stated_lifetime: None,
            oauth_post: true,
            access_token_field: false,
            anonymous: false,
        }
    }
}

impl IssuerConfig {
    #[must_use]
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// An OAuth2 refresh token the issuer accepts (docker's `identitytoken`).
    #[must_use]
    pub fn identity_token(mut self, token: &str) -> Self {
        self.identity_tokens.push(token.to_owned());
        self
    }

    /// How long tokens really live, in seconds.
    #[must_use]
    pub fn lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = seconds;
        self
    }

    /// The `expires_in` to claim, when it should differ from the real lifetime.
    #[must_use]
    pub fn stated_lifetime(mut self, seconds: u64) -> Self {
        self.stated_lifetime = Some(seconds);
        self
    }

    /// Answer `POST /token` with 405, as Harbor does.
    #[must_use]
    pub fn without_oauth_post(mut self) -> Self {
        self.oauth_post = false;
        self
    }

    /// Grant tokens to requests without credentials (public registries do, for pulls).
    #[must_use]
    pub fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// Answer with `access_token` only, as ACR does.
    #[must_use]
    pub fn access_token_field(mut self) -> Self {
        self.access_token_field = true;
        self
    }
}

/// One token handed out.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    /// The scopes asked for, space-separated.
    pub scopes: String,
    /// `GET`, or `POST` for the OAuth2 form.
    pub method: &'static str,
    /// A refresh token handed out with it, if any.
    pub refresh_token: Option<String>,
}

struct Inner {
    config: IssuerConfig,
    signer: Signer,
    issued: Mutex<Vec<Issued>>,
    refused: Mutex<usize>,
    refresh_tokens: Mutex<Vec<String>>,
}

/// A running token server on a loopback port; stops when dropped.
#[derive(Debug)]
pub struct TokenIssuer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("config", &self.config).finish_non_exhaustive()
    }
}

impl TokenIssuer {
    pub fn start(config: IssuerConfig) -> Self {
        let signer = Signer::new("hoist test token signer");
        let dir = tempfile::tempdir().expect("temp dir for the token certificate");
        std::fs::write(dir.path().join("token.crt"), signer.cert_pem()).expect("write the token certificate");
        let inner = Arc::new(Inner {
            config,
            signer,
            issued: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
            refresh_tokens: Mutex::new(Vec::new()),
        });

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("token server address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().route("/token", get(get_token).post(post_token)).with_state(Arc::clone(&inner));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self { inner, addr, dir, stop: Some(stop), thread: Some(thread) }
    }

    /// What the registry's challenge names as realm.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn service(&self) -> &'static str {
        SERVICE
    }

    pub fn issuer(&self) -> &'static str {
        ISSUER
    }

    /// The certificate the registry trusts for token signatures.
    pub fn root_cert_bundle(&self) -> PathBuf {
        self.dir.path().join("token.crt")
    }

    /// Every token handed out so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.inner.issued.lock().expect("issued list").clone()
    }

    /// Every secret handed out so far: tokens and refresh tokens.
    pub fn secrets(&self) -> Vec<String> {
        let issued = self.issued();
        let refresh: Vec<String> = issued.iter().filter_map(|i| i.refresh_token.clone()).collect();
        issued.into_iter().map(|i| i.token).chain(refresh).collect()
    }

    /// How many token requests were refused (bad or missing credentials).
    pub fn refused(&self) -> usize {
        *self.inner.refused.lock().expect("refused count")
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Inner {
    fn random_hex(&self) -> String {
        self.signer.random_hex(16)
    }

    fn sign(&self, subject: &str, scopes: &[String]) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let issued_at = now();
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            // Rounded up, so the token lives at least `lifetime` seconds.
            "exp": issued_at + 1 + self.config.lifetime - LEEWAY,
            "nbf": issued_at - 1,
            "iat": issued_at,
            "jti": self.random_hex(),
            "access": access,
        });
        self.signer.sign(&claims)
    }

    fn grant(&self, subject: &str, scopes: &[String], method: &'static str, offline: bool) -> Response {
        let token = self.sign(subject, scopes);
        let refresh_token = offline.then(|| {
            let refresh = self.random_hex();
            self.refresh_tokens.lock().expect("refresh tokens").push(refresh.clone());
            refresh
        });
        self.issued.lock().expect("issued list").push(Issued {
            token: token.clone(),
            scopes: scopes.join(" "),
            method,
            refresh_token: refresh_token.clone(),
        });
        let field = if self.config.access_token_field { "access_token" } else { "token" };
        let mut body = serde_json::json!({
            field: token,
            "expires_in": self.config.stated_lifetime.unwrap_or(self.config.lifetime),
        });
        if let Some(refresh) = refresh_token {
            body["refresh_token"] = refresh.into();
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn refuse(&self) -> Response {
        *self.refused.lock().expect("refused count") += 1;
        let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]});
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
    }

    fn is_refresh_token(&self, token: &str) -> bool {
        self.config.identity_tokens.iter().any(|t| t == token)
            || self.refresh_tokens.lock().expect("refresh tokens").iter().any(|t| t == token)
    }

    /// The subject for Basic credentials: a user's password, or an identity token as password.
    fn check_basic(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let known = self.config.users.iter().any(|(u, p)| u == user && p == password);
        (known || self.is_refresh_token(password)).then(|| user.to_owned())
    }
}

async fn get_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let subject = match inner.check_basic(&headers) {
        Some(subject) => subject,
        None if inner.config.anonymous && !headers.contains_key("authorization") => "anonymous".to_owned(),
        None => return inner.refuse(),
    };
    let scopes: Vec<String> = query.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let offline = query.iter().any(|(k, v)| k == "offline_token" && v == "true");
    inner.grant(&subject, &scopes, "GET", offline)
}

async fn post_token(State(inner): State<Arc<Inner>>, Form(form): Form<Vec<(String, String)>>) -> Response {
    if !inner.config.oauth_post {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let subject = match field("grant_type") {
        Some("refresh_token") if field("refresh_token").is_some_and(|t| inner.is_refresh_token(t)) => "oauth-client",
        Some("password")
            if inner
                .config
                .users
                .iter()
                .any(|(u, p)| Some(u.as_str()) == field("username") && Some(p.as_str()) == field("password")) =>
        {
            field("username").unwrap_or_default()
        }
        _ => return inner.refuse(),
    };
    let scopes: Vec<String> =
        field("scope").unwrap_or_default().split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let offline = field("access_type") == Some("offline");
    let subject = subject.to_owned();
    inner.grant(&subject, &scopes, "POST", offline)
}
