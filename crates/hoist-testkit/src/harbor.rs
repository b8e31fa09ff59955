//! A Harbor 2.x stand-in in front of a real distribution registry.
//!
//! Real Harbor (core, its database, Redis, jobservice, portal, a registry)
//! cannot run here, so the testkit stands in for its core: the parts a
//! client meets when it pushes, logs in and manages projects. Everything
//! below is taken from goharbor/harbor's source (`main` at
//! c50c7ddd6ea4e335a480b49c618281882ab7eec9; line numbers are that
//! commit's) and `shared/research/wave2-anchors.md` §2, and is kept as
//! Harbor does it, not as would suit hoist:
//!
//! - **Registry traffic is proxied to a real distribution registry** with
//!   the core's own Basic credential (`src/server/registry/proxy.go`
//!   `basicAuthDirector`, :44-52): distribution runs with htpasswd auth,
//!   and only what passes the stand-in's checks reaches it. It stays the
//!   judge of what is stored.
//! - **`/v2/` authorization** (`src/server/middleware/v2auth/auth.go`
//!   `check`, :46-81): `GET /v2/` needs an authenticated caller; a `GET` or
//!   `HEAD` on a repository without `Authorization` gets a challenge (:65-67,
//!   "see #11271"); otherwise the project (the first path component, :69)
//!   is looked up first, and **a missing project is a 401 whose message is
//!   "project NAME not found"** with an empty `Www-Authenticate` (:70-72,
//!   :178-182: the lookup error is returned with no challenge); then the
//!   permission: refused, a 401 with a challenge. The challenge is `Bearer
//!   realm="<host>/service/token",service="harbor-registry"` plus the scopes
//!   when the request had no `Authorization`, else `Basic realm="harbor"`
//!   (`getChallenge`, :92-116). A mount also needs pull on its source
//!   (`access.go` `accessList`, :113-119).
//! - **Callers** (`src/server/middleware/security/`): a Bearer token on
//!   `/v2` paths only (`v2_token.go` :44-47), refused if issued more than
//!   the 60 s leeway before its project was created (:94-115); Basic
//!   credentials of a robot (`robot$…`, `robot.go`) or a user
//!   (`basic_auth.go`); the session cookie (`session.go`). Credentials that
//!   fail make the caller anonymous, not an error (`security.go` :44-49,
//!   `unauthorized.go`). With OIDC auth, a user's CLI secret counts only on
//!   the paths `oidc_cli.go` `valid` lists (:85-113: `/v2`, the token
//!   service, `POST`/`GET /api/v2.0/projects`, … but not `HEAD`).
//! - **The token service** `GET /service/token` (`src/core/service/token/`):
//!   an unknown `service` is a 400 (`token.go` :37-41); an anonymous caller
//!   asking no scope is a 401 (`creator.go` :208-213), one asking scopes
//!   gets a token for what anonymous may do; each repository scope gets the
//!   actions the caller may do there (`creator.go` :150-185), **none when
//!   the project does not exist** (:158-161). Tokens last 30 minutes
//!   (`expires_in` 1800). `POST` is a 405, as beego answers it.
//! - **Projects** (`src/server/v2.0/handler/project.go`): `POST
//!   /api/v2.0/projects` needs a login (401, :104-106); a project-level robot
//!   gets 403 "Only system level robot can create project" (:114-117); with
//!   `project_creation_restriction` `adminonly`, anyone but a system
//!   administrator or a system-level robot allowed to create projects gets
//!   403 "Only system admin can create project" (:118-121); `metadata.public`
//!   must be the string `"true"` or `"false"` (400, :146-165); the name
//!   must match `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, 1 to 255 characters (400,
//!   `src/pkg/project/manager.go` :59-88); an existing name is a 409 "The
//!   project named NAME already exists" (`src/pkg/project/dao/dao.go` :73);
//!   success is a 201 with `Location: /api/v2.0/projects/<id>` (:258-265).
//!   The creator is the owner and the project's admin; a project made by a
//!   robot is owned by the first system administrator (:186-217).
//!   `HEAD /api/v2.0/projects?project_name=` needs a login and answers
//!   200 or 404 whoever asks (:428-438). `GET /api/v2.0/projects?name=` is
//!   a fuzzy match over the projects the caller can see.
//! - **Errors** are `{"errors":[{"code","message"}]}` (`src/lib/http/error.go`
//!   `SendError`).
//! - **Sessions and CSRF**: beego sessions are on for every request
//!   (`src/core/main.go` :147-148), so answers set a `sid` cookie when the
//!   request had none. `POST /c/login` (form `principal`, `password`;
//!   `src/core/controllers/base.go` :74-109) binds the user to the session;
//!   wrong credentials are a 401 with an empty body; with OIDC auth a user
//!   other than the administrator gets a 403 with `redirect_location`
//!   (:77-93). CSRF (`src/server/middleware/csrf/csrf.go`, gorilla/csrf
//!   v1.7.2 as `src/go.mod` pins it) applies to every request except those
//!   to `/v2/`, `/api/`, `/service/` that carry no session cookie (:94-102);
//!   its real token lives in the signed `_gorilla_csrf` cookie (made when
//!   missing or invalid), every answer carries a freshly masked copy in
//!   `X-Harbor-CSRF-Token` (:45-64), and an unsafe request without the
//!   header is a 403 "CSRF token not found in request", with a wrong one
//!   "CSRF token invalid" (gorilla/csrf `csrf.go` :212-298, `helpers.go`
//!   :77-103).
//! - **`GET /api/v2.0/systeminfo`** answers anyone; only an authenticated
//!   caller sees `harbor_version`, `project_creation_restriction` and the
//!   rest (`src/server/v2.0/handler/systeminfo.go` `convertInfo`, :80-114).
//!
//! What it leaves out: project members beyond what tests set, quotas,
//! replication, scanning, HTTPS (tests reach it on loopback over plain
//! HTTP, as any loopback registry), and every API path a push does not use.
//! Unknown paths are 404.
//!
//! The accounts: the system administrator `admin`, an ordinary user
//! `developer`, a system-level robot `robot$ci` that may create projects
//! and push to any, and `robot$library+builder`, a robot of the `library`
//! project (pull and push there). The public `library` project exists, as
//! in a fresh Harbor.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::fault_proxy::Reply;
use crate::jwt::Signer;
use crate::registry::TestRegistry;

/// The system administrator, as a fresh Harbor has him.
pub const ADMIN: (&str, &str) = ("admin", "Harbor12345");
/// An ordinary user, member of no project at first.
pub const DEVELOPER: (&str, &str) = ("developer", "Developer-pass-1");
/// A system-level robot: may create projects, and pull and push in all.
pub const SYSTEM_ROBOT: (&str, &str) = ("robot$ci", "SystemRobotSecret1");
/// A robot of the `library` project: pull and push there, nothing else.
pub const PROJECT_ROBOT: (&str, &str) = ("robot$library+builder", "ProjectRobotSecret1");

/// Harbor's name for its registry in tokens and challenges (`creator.go` :48).
const SERVICE: &str = "harbor-registry";
/// How long Harbor's tokens live by default (`token_expiration`: 30 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// `common.JwtLeeway` (`src/common/const.go` :261).
const JWT_LEEWAY: Duration = Duration::from_secs(60);
/// gorilla/csrf's token length.
const CSRF_TOKEN_LEN: usize = 32;
/// The account the core uses towards distribution.
const CORE_USER: &str = "harbor_registry_user";

/// Who may create projects (`project_creation_restriction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// Harbor's default: any logged-in user, and system-level robots.
    Everyone,
    /// Only system administrators (and system-level robots allowed to).
    AdminOnly,
}

/// A project member's role (`src/common/const.go`: 1 admin, 2 developer, 3 guest, 4 maintainer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ProjectAdmin,
    Maintainer,
    Developer,
    Guest,
}

/// How the stand-in starts.
#[derive(Clone, Debug)]
pub struct HarborConfig {
    restriction: Restriction,
    oidc: bool,
    projects: Vec<(String, bool)>,
    members: Vec<(String, String, Role)>,
}

impl Default for HarborConfig {
    fn default() -> Self {
        Self {
            restriction: Restriction::Everyone,
            oidc: false,
            projects: vec![("library".into(), true)],
            members: Vec::new(),
        }
    }
}

impl HarborConfig {
    /// `project_creation_restriction: adminonly`.
    #[must_use]
    pub fn admin_only(mut self) -> Self {
        self.restriction = Restriction::AdminOnly;
        self
    }

    /// `auth_mode: oidc_auth`: `developer` is an OIDC user, whose password
    /// works as its CLI secret only where Harbor takes CLI secrets.
    #[must_use]
    pub fn oidc(mut self) -> Self {
        self.oidc = true;
        self
    }

    /// A project that exists from the start (owned by `admin`).
    #[must_use]
    pub fn project(mut self, name: &str, public: bool) -> Self {
        self.projects.push((name.to_owned(), public));
        self
    }

    /// `user` is a member of `project` with `role`.
    #[must_use]
    pub fn member(mut self, project: &str, user: &str, role: Role) -> Self {
        self.members.push((project.to_owned(), user.to_owned(), role));
        self
    }
}

/// One project as the stand-in keeps it.
#[derive(Clone, Debug)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub public: bool,
    pub owner: String,
    pub members: HashMap<String, Role>,
    created: SystemTime,
}

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// `Basic`, `Bearer` or nothing.
    pub auth: Option<String>,
    /// Whether it carried the `sid` session cookie.
    pub session: bool,
    /// Whether it carried `X-Harbor-CSRF-Token`.
    pub csrf_header: bool,
    pub status: u16,
}

#[derive(Debug)]
struct Token {
    subject: String,
    /// Repository → actions granted.
    access: Vec<(String, Vec<String>)>,
    issued: SystemTime,
    expires: Instant,
}

#[derive(Debug)]
struct State {
    config: HarborConfig,
    projects: BTreeMap<String, Project>,
    next_id: u64,
    tokens: HashMap<String, Token>,
    /// `sid` → the user logged in with it, if any.
    sessions: HashMap<String, Option<String>>,
    log: Vec<Logged>,
    /// Every token, session id and CSRF value handed out.
    secrets: Vec<String>,
}

struct Inner {
    state: Mutex<State>,
    signer: Signer,
    csrf_key: ring::hmac::Key,
    upstream: u16,
    core_auth: String,
    port: u16,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("upstream", &self.upstream).field("port", &self.port).finish_non_exhaustive()
    }
}

/// A Harbor stand-in on `127.0.0.1:<port>` in front of its own distribution
/// registry; both stop when it is dropped.
#[derive(Debug)]
pub struct TestHarbor {
    inner: Arc<Inner>,
    registry: TestRegistry,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Principal {
    Anonymous,
    User {
        name: String,
        admin: bool,
    },
    Robot {
        name: String,
        system: bool,
    },
    /// A Bearer token's subject and grants (on `/v2` paths).
    Token {
        subject: String,
        access: Vec<(String, Vec<String>)>,
    },
}

impl Principal {
    fn authenticated(&self) -> bool {
        *self != Self::Anonymous
    }

    fn name(&self) -> &str {
        match self {
            Self::Anonymous => "",
            Self::User { name, .. } | Self::Robot { name, .. } => name,
            Self::Token { subject, .. } => subject,
        }
    }
}

impl TestHarbor {
    /// Harbor with its defaults: anyone logged in may create projects.
    pub fn start() -> Self {
        Self::start_with(HarborConfig::default())
    }

    pub fn start_with(config: HarborConfig) -> Self {
        let signer = Signer::new("hoist test harbor token signer");
        let core_password = signer.random_hex(16);
        let registry = TestRegistry::builder().basic_auth(CORE_USER, &core_password).start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the Harbor stand-in");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Harbor stand-in");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("stand-in address").port();
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).expect("a tokio listener")
        };
        let now = SystemTime::now();
        let mut projects = BTreeMap::new();
        let mut next_id = 1;
        for (name, public) in &config.projects {
            projects.insert(
                name.clone(),
                Project {
                    id: next_id,
                    name: name.clone(),
                    public: *public,
                    owner: ADMIN.0.into(),
                    members: HashMap::from([(ADMIN.0.to_owned(), Role::ProjectAdmin)]),
                    created: now - Duration::from_secs(3600),
                },
            );
            next_id += 1;
        }
        for (project, user, role) in &config.members {
            if let Some(project) = projects.get_mut(project) {
                project.members.insert(user.clone(), *role);
            }
        }
        let csrf_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &signer.random_bytes(32));
        let core_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{CORE_USER}:{core_password}"))
        );
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                config,
                projects,
                next_id,
                tokens: HashMap::new(),
                sessions: HashMap::new(),
                log: Vec::new(),
                secrets: Vec::new(),
            }),
            signer,
            csrf_key,
            upstream: registry.port(),
            core_auth,
            port,
        });
        let shared = Arc::clone(&inner);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let inner = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| handle(Arc::clone(&inner), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { inner, registry, runtime: Some(runtime) }
    }

    /// `127.0.0.1:<port>`: the registry part of a reference to this Harbor.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.inner.port)
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The distribution registry behind it (for checks of what it stores).
    pub fn registry(&self) -> &TestRegistry {
        &self.registry
    }

    /// Project `name`, if it exists.
    pub fn project(&self, name: &str) -> Option<Project> {
        self.inner.lock().projects.get(name).cloned()
    }

    /// Every project's name.
    pub fn project_names(&self) -> Vec<String> {
        self.inner.lock().projects.keys().cloned().collect()
    }

    /// Deletes project `name`, as an administrator can once it is empty
    /// (what it held stays in the registry behind, unreachable).
    pub fn delete_project(&self, name: &str) {
        self.inner.lock().projects.remove(name);
    }

    /// Makes `user` a member of `project` with `role`.
    pub fn add_member(&self, project: &str, user: &str, role: Role) {
        if let Some(project) = self.inner.lock().projects.get_mut(project) {
            project.members.insert(user.to_owned(), role);
        }
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.inner.lock().log.clone()
    }

    /// Requests with `method` whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.log().iter().filter(|l| l.method == method && l.path.starts_with(prefix)).count()
    }

    /// Every token, session id and CSRF token or cookie handed out.
    pub fn secrets(&self) -> Vec<String> {
        self.inner.lock().secrets.clone()
    }
}

impl Drop for TestHarbor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(crate::fault_proxy::full(body.into()));
    *reply.status_mut() = status;
    reply
}

/// Harbor's error answer (`src/lib/http/error.go` `SendError`).
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    let mut reply = reply(status, format!("{body}\n"));
    reply.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    reply
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = reply(status, value.to_string());
    reply.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    reply
}

async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Result<Reply, std::io::Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers = request.headers().clone();
    let cookies = cookies(&headers);
    let mut logged = Logged {
        method: method.as_str().to_owned(),
        path: path.clone(),
        query: query.clone(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(' ').next())
            .map(str::to_owned),
        session: cookies.contains_key("sid"),
        csrf_header: headers.contains_key("x-harbor-csrf-token"),
        status: 0,
    };
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let reply = if path == "/v2" || path.starts_with("/v2/") {
        registry_request(&inner, parts, body).await?
    } else if path == "/service/token" {
        token_service(&inner, &method, &headers, &query)
    } else {
        core_request(&inner, &method, &path, &query, &headers, &cookies, &body)
    };
    logged.status = reply.status().as_u16();
    inner.lock().log.push(logged);
    Ok(reply)
}

/// The request's cookies by name.
fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((user, password))
}

/// Whether an OIDC user's CLI secret counts on this request (`oidc_cli.go` `valid`, :85-113).
fn oidc_cli_path(method: &Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    if path == "/service/token" || path.starts_with("/v2") {
        return true;
    }
    let projects = "/api/v2.0/projects";
    (*method == Method::POST && path == projects)
        || (*method == Method::GET
            && (path == projects
                || path == "/api/v2.0/systeminfo"
                || path == "/api/version"
                || path == "/api/v2.0/labels"))
}

impl Inner {
    /// The caller, as Harbor's security middleware finds it (Basic, then the session).
    fn principal(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        cookies: &HashMap<String, String>,
    ) -> Principal {
        let state = self.lock();
        if path.starts_with("/v2")
            && let Some(token) =
                headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
        {
            if let Some(found) = state.tokens.get(token.trim())
                && found.expires > Instant::now()
                && token_after_creation(&state, found, path)
            {
                return Principal::Token { subject: found.subject.clone(), access: found.access.clone() };
            }
            return Principal::Anonymous;
        }
        if let Some((user, password)) = basic_credentials(headers) {
            if user.starts_with("robot$") {
                for (name, secret, system) in
                    [(SYSTEM_ROBOT.0, SYSTEM_ROBOT.1, true), (PROJECT_ROBOT.0, PROJECT_ROBOT.1, false)]
                {
                    if user == name && password == secret {
                        return Principal::Robot { name: name.to_owned(), system };
                    }
                }
                return Principal::Anonymous;
            }
            if user == ADMIN.0 && password == ADMIN.1 {
                return Principal::User { name: user, admin: true };
            }
            if user == DEVELOPER.0 && password == DEVELOPER.1 && (!state.config.oidc || oidc_cli_path(method, path)) {
                return Principal::User { name: user, admin: false };
            }
            return Principal::Anonymous;
        }
        if let Some(sid) = cookies.get("sid")
            && let Some(Some(user)) = state.sessions.get(sid)
        {
            return Principal::User { name: user.clone(), admin: user == ADMIN.0 };
        }
        Principal::Anonymous
    }

    fn hand_out(&self, secret: &str) {
        self.lock().secrets.push(secret.to_owned());
    }
}

/// `v2_token.go` `tokenIssuedAfterProjectCreation` (:83-118).
fn token_after_creation(state: &State, token: &Token, path: &str) -> bool {
    let Some((repository, _)) = repository_of(path) else { return true };
    let project = repository.split('/').next().unwrap_or_default();
    match state.projects.get(project) {
        Some(p) => token.issued + JWT_LEEWAY >= p.created,
        None => false,
    }
}

/// What `action` on a repository of `project` needs, and whether `who` has it.
fn may(state: &State, who: &Principal, repository: &str, action: &str) -> bool {
    let project_name = repository.split('/').next().unwrap_or_default();
    let Some(project) = state.projects.get(project_name) else { return false };
    let public_pull = project.public && action == "pull";
    match who {
        Principal::Anonymous => public_pull,
        Principal::User { admin: true, .. } => true,
        Principal::User { name, .. } => {
            public_pull
                || match project.members.get(name) {
                    Some(Role::ProjectAdmin | Role::Maintainer) => true,
                    Some(Role::Developer) => action != "delete",
                    Some(Role::Guest) => action == "pull",
                    None => false,
                }
        }
        Principal::Robot { system: true, .. } => action != "delete",
        Principal::Robot { name, system: false } => {
            public_pull
                || (name.strip_prefix("robot$").and_then(|n| n.split('+').next()) == Some(project_name)
                    && action != "delete")
        }
        Principal::Token { access, .. } => {
            access.iter().any(|(name, actions)| name == repository && actions.iter().any(|a| a == action || a == "*"))
        }
    }
}

/// `team/app` and what follows it, from `/v2/team/app/blobs/…` (or
/// `/manifests/`, `/tags/`, `/referrers/`).
fn repository_of(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/")?;
    ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .map(|end| (rest[..end].to_owned(), rest[end..].to_owned()))
        .filter(|(name, _)| !name.is_empty())
}

/// Everything under `/v2`: Harbor's checks, then the registry behind.
async fn registry_request(
    inner: &Inner,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Reply, std::io::Error> {
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let cookies = cookies(&parts.headers);
    let who = inner.principal(&method, &path, &parts.headers, &cookies);
    let has_auth = parts.headers.contains_key("authorization");
    let challenge = |scopes: &[String]| {
        if has_auth {
            r#"Basic realm="harbor""#.to_owned()
        } else {
            let mut challenge =
                format!(r#"Bearer realm="http://127.0.0.1:{}/service/token",service="{SERVICE}""#, inner.port);
            if !scopes.is_empty() {
                let _ = write!(challenge, r#",scope="{}""#, scopes.join(" "));
            }
            challenge
        }
    };
    let unauthorized = |challenge: String, message: &str| {
        let mut reply = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
        reply.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
        reply.headers_mut().insert("www-authenticate", HeaderValue::from_str(&challenge).expect("a header value"));
        reply
    };
    if path == "/v2/" || path == "/v2" {
        if !who.authenticated() {
            return Ok(unauthorized(challenge(&[]), "unauthorized"));
        }
        return forward(inner, parts, body).await;
    }
    let Some((repository, _)) = repository_of(&path) else {
        return Ok(unauthorized(String::new(), &format!("un-recognized request: {method} {path}")));
    };
    let action = match method {
        Method::POST | Method::PATCH | Method::PUT => "push",
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => return Ok(unauthorized(String::new(), &format!("un-recognized request: {method} {path}"))),
    };
    let mut access = vec![(repository.clone(), action)];
    if method == Method::POST
        && let Some(from) = url_query(&query, "from")
        && url_query(&query, "mount").is_some()
    {
        access.push((from, "pull"));
    }
    let scopes: Vec<String> = access
        .iter()
        .map(|(name, action)| format!("repository:{name}:{}", if *action == "push" { "pull,push" } else { action }))
        .collect();
    {
        let state = inner.lock();
        for (name, action) in &access {
            if !has_auth && (method == Method::GET || method == Method::HEAD) {
                return Ok(unauthorized(challenge(&scopes), "authorize header needed to send HEAD to repository"));
            }
            let project = name.split('/').next().unwrap_or_default();
            if !state.projects.contains_key(project) {
                // The lookup's error goes back as it is, with no challenge (auth.go :70-72, :178-182).
                return Ok(unauthorized(
                    String::new(),
                    &format!("project {project} not found: project {project} not found"),
                ));
            }
            if !may(&state, &who, name, action) {
                return Ok(unauthorized(
                    challenge(&scopes),
                    &format!("unauthorized to access repository: {name}, action: {action}"),
                ));
            }
        }
    }
    forward(inner, parts, body).await
}

fn url_query(query: &str, name: &str) -> Option<String> {
    url_pairs(query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `seconds` since the epoch as RFC 3339 UTC, as Go's `time.RFC3339` prints it.
fn rfc3339(seconds: u64) -> String {
    // Howard Hinnant's days-to-civil.
    let days = i64::try_from(seconds / 86_400).unwrap_or_default();
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Sends the request on to distribution with the core's credential.
async fn forward(inner: &Inner, mut parts: hyper::http::request::Parts, body: Bytes) -> Result<Reply, std::io::Error> {
    parts.headers.remove("cookie");
    parts.headers.insert("authorization", HeaderValue::from_str(&inner.core_auth).expect("a header value"));
    let mut reply = crate::fault_proxy::forward(parts, body, inner.upstream).await?;
    if let Some(location) = reply.headers().get("location").and_then(|v| v.to_str().ok()) {
        let rewritten =
            location.replace(&format!("127.0.0.1:{}", inner.upstream), &format!("127.0.0.1:{}", inner.port));
        reply.headers_mut().insert("location", HeaderValue::from_str(&rewritten).expect("a header value"));
    }
    Ok(reply)
}

/// `GET /service/token` (`src/core/service/token/`).
fn token_service(inner: &Inner, method: &Method, headers: &HeaderMap, query: &str) -> Reply {
    if *method != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let pairs = url_pairs(query);
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str()).unwrap_or_default();
    if service != SERVICE {
        return reply(StatusCode::BAD_REQUEST, format!("Unable to handle service: {service}"));
    }
    let who = inner.principal(method, "/service/token", headers, &HashMap::new());
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    if !who.authenticated() && scopes.is_empty() {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    let access: Vec<(String, Vec<String>)> = {
        let state = inner.lock();
        scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, _) = rest.rsplit_once(':')?;
                if kind != "repository" {
                    return None;
                }
                // Every action the caller may do there; none in a missing project.
                let granted = ["pull", "push", "delete"]
                    .into_iter()
                    .filter(|action| may(&state, &who, name, action))
                    .map(str::to_owned)
                    .collect();
                Some((name.to_owned(), granted))
            })
            .collect()
    };
    let issued = SystemTime::now();
    let issued_at = issued.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let claims = serde_json::json!({
        "iss": "harbor-token-issuer",
        "sub": who.name(),
        "aud": SERVICE,
        "exp": issued_at + TOKEN_LIFETIME.as_secs(),
        "nbf": issued_at,
        "iat": issued_at,
        "jti": inner.signer.random_hex(16),
        "access": access.iter().map(|(name, actions)| serde_json::json!({"type": "repository", "name": name, "actions": actions})).collect::<Vec<_>>(),
    });
    let token = inner.signer.sign(&claims);
    {
        let mut state = inner.lock();
        state.tokens.insert(
            token.clone(),
            Token { subject: who.name().to_owned(), access, issued, expires: Instant::now() + TOKEN_LIFETIME },
        );
        state.secrets.push(token.clone());
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "token": token,
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "issued_at": rfc3339(issued_at),
        }),
    )
}

/// Everything of the core's own: sessions, CSRF, then the API.
fn core_request(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    cookies: &HashMap<String, String>,
    body: &[u8],
) -> Reply {
    // beego starts a session for every request without one (main.go :147).
    let mut set_cookies = Vec::new();
    let sid = match cookies.get("sid").filter(|sid| inner.lock().sessions.contains_key(*sid)) {
        Some(sid) => sid.clone(),
        None => {
            let sid = inner.signer.random_hex(16);
            inner.lock().sessions.insert(sid.clone(), None);
            inner.hand_out(&sid);
            set_cookies.push(format!("sid={sid}; Path=/; HttpOnly"));
            sid
        }
    };
    let carries_session = cookies.contains_key("sid");
    let skipped = (path.starts_with("/api/") || path.starts_with("/service/")) && !carries_session;
    let mut csrf_token = None;
    let mut reply = 'reply: {
        if !skipped {
            let (real, fresh) = match cookies.get("_gorilla_csrf").and_then(|c| inner.csrf_real_token(c)) {
                Some(real) => (real, None),
                None => {
                    let real = inner.signer.random_bytes(CSRF_TOKEN_LEN);
                    let cookie = inner.csrf_cookie(&real);
                    inner.hand_out(&cookie);
                    (real, Some(cookie))
                }
            };
            if let Some(cookie) = fresh {
                set_cookies.push(format!("_gorilla_csrf={cookie}; Path=/; HttpOnly; SameSite=Strict"));
            }
            let masked = inner.mask(&real);
            inner.hand_out(&masked);
            csrf_token = Some(masked);
            if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE) {
                let sent = headers.get("x-harbor-csrf-token").and_then(|v| v.to_str().ok());
                match sent {
                    None | Some("") => {
                        break 'reply error(StatusCode::FORBIDDEN, "FORBIDDEN", "CSRF token not found in request");
                    }
                    Some(sent) if unmask(sent).as_deref() != Some(real.as_slice()) => {
                        break 'reply error(StatusCode::FORBIDDEN, "FORBIDDEN", "CSRF token invalid");
                    }
                    Some(_) => {}
                }
            }
        }
        let who = inner.principal(method, path, headers, cookies);
        api(inner, method, path, query, body, &who, &sid)
    };
    for cookie in set_cookies {
        reply.headers_mut().append("set-cookie", HeaderValue::from_str(&cookie).expect("a header value"));
    }
    if let Some(token) = csrf_token {
        reply.headers_mut().insert("x-harbor-csrf-token", HeaderValue::from_str(&token).expect("a header value"));
    }
    reply
}

impl Inner {
    /// gorilla/csrf keeps the real token in a signed cookie.
    fn csrf_cookie(&self, real: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.csrf_key, real);
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}|{}", engine.encode(real), engine.encode(tag.as_ref()))
    }

    fn csrf_real_token(&self, cookie: &str) -> Option<Vec<u8>> {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (real, tag) = cookie.trim_matches('"').split_once('|')?;
        let (real, tag) = (engine.decode(real).ok()?, engine.decode(tag).ok()?);
        ring::hmac::verify(&self.csrf_key, &real, &tag).ok()?;
        (real.len() == CSRF_TOKEN_LEN).then_some(real)
    }

    /// A one-time pad and the token XOR it, base64 (gorilla/csrf `mask`).
    fn mask(&self, real: &[u8]) -> String {
        let otp = self.signer.random_bytes(CSRF_TOKEN_LEN);
        let mut issued = otp.clone();
        issued.extend(otp.iter().zip(real).map(|(a, b)| a ^ b));
        base64::engine::general_purpose::STANDARD.encode(issued)
    }
}

/// gorilla/csrf `unmask`: pad + masked → the token.
fn unmask(issued: &str) -> Option<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(issued).ok()?;
    if bytes.len() != CSRF_TOKEN_LEN * 2 {
        return None;
    }
    let (otp, masked) = bytes.split_at(CSRF_TOKEN_LEN);
    Some(otp.iter().zip(masked).map(|(a, b)| a ^ b).collect())
}

/// The API handlers.
fn api(inner: &Inner, method: &Method, path: &str, query: &str, body: &[u8], who: &Principal, sid: &str) -> Reply {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("POST", "/c/login") => login(inner, body, sid),
        ("GET", "/api/v2.0/systeminfo") => system_info(inner, who),
        ("HEAD", "/api/v2.0/projects") => {
            if !who.authenticated() {
                return reply(StatusCode::UNAUTHORIZED, "");
            }
            let name = url_query(query, "project_name").unwrap_or_default();
            let status = if inner.lock().projects.contains_key(&name) { StatusCode::OK } else { StatusCode::NOT_FOUND };
            reply(status, "")
        }
        ("GET", "/api/v2.0/projects") => list_projects(inner, query, who),
        ("POST", "/api/v2.0/projects") => create_project(inner, body, who),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("{method} {path} is not served by this stand-in")),
    }
}

/// `POST /c/login` (`src/core/controllers/base.go` :74-109).
fn login(inner: &Inner, body: &[u8], sid: &str) -> Reply {
    let form = url_pairs(&String::from_utf8_lossy(body));
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let (principal, password) = (field("principal"), field("password"));
    let oidc = inner.lock().config.oidc;
    if oidc && principal != ADMIN.0 {
        return json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({ "redirect_location": format!("http://127.0.0.1:{}/c/oidc/login", inner.port) }),
        );
    }
    let known = [ADMIN, DEVELOPER].iter().any(|(u, p)| *u == principal && *p == password);
    if !known {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    inner.lock().sessions.insert(sid.to_owned(), Some(principal));
    reply(StatusCode::OK, "")
}

fn system_info(inner: &Inner, who: &Principal) -> Reply {
    let state = inner.lock();
    let mut info = serde_json::json!({
        "auth_mode": if state.config.oidc { "oidc_auth" } else { "db_auth" },
        "primary_auth_mode": false,
        "self_registration": false,
        "banner_message": "",
    });
    if who.authenticated() {
        info["harbor_version"] = "v2.14.0-stand-in".into();
        info["project_creation_restriction"] =
            if state.config.restriction == Restriction::AdminOnly { "adminonly" } else { "everyone" }.into();
        info["registry_url"] = format!("127.0.0.1:{}", inner.port).into();
        info["external_url"] = format!("http://127.0.0.1:{}", inner.port).into();
        info["read_only"] = false.into();
        info["has_ca_root"] = false.into();
    }
    json(StatusCode::OK, &info)
}

fn list_projects(inner: &Inner, query: &str, who: &Principal) -> Reply {
    let name = url_query(query, "name").unwrap_or_default();
    let page_size: usize = url_query(query, "page_size").and_then(|s| s.parse().ok()).unwrap_or(10).clamp(1, 100);
    let state = inner.lock();
    let visible: Vec<&Project> = state
        .projects
        .values()
        .filter(|p| p.name.contains(&name))
        .filter(|p| {
            p.public
                || match who {
                    Principal::User { admin: true, .. } | Principal::Robot { system: true, .. } => true,
                    Principal::User { name, .. } => p.members.contains_key(name),
                    _ => false,
                }
        })
        .collect();
    let total = visible.len();
    let listed: Vec<serde_json::Value> = visible
        .into_iter()
        .take(page_size)
        .map(|p| {
            serde_json::json!({
                "project_id": p.id,
                "name": p.name,
                "owner_name": p.owner,
                "metadata": { "public": p.public.to_string() },
            })
        })
        .collect();
    let mut reply = json(StatusCode::OK, &serde_json::Value::Array(listed));
    reply.headers_mut().insert("x-total-count", total.into());
    reply
}

/// `POST /api/v2.0/projects` (`project.go` :103-266).
fn create_project(inner: &Inner, body: &[u8], who: &Principal) -> Reply {
    if !who.authenticated() {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "UnAuthorized");
    }
    if let Principal::Robot { system: false, .. } = who {
        return error(StatusCode::FORBIDDEN, "FORBIDDEN", "Only system level robot can create project");
    }
    let mut state = inner.lock();
    let admin = matches!(who, Principal::User { admin: true, .. } | Principal::Robot { system: true, .. });
    if state.config.restriction == Restriction::AdminOnly && !admin {
        return error(StatusCode::FORBIDDEN, "FORBIDDEN", "Only system admin can create project");
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "the request body is not valid JSON");
    };
    let name = request["project_name"].as_str().unwrap_or_default().to_owned();
    let public = match (&request["metadata"]["public"], &request["public"]) {
        (serde_json::Value::String(p), _) if p == "true" || p == "false" => p == "true",
        (serde_json::Value::String(p), _) if !p.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("metadata.public should only be 'true' or 'false', but got: '{p}'"),
            );
        }
        (_, serde_json::Value::Bool(public)) => *public,
        _ => false,
    };
    if name.is_empty() || name.len() > 255 {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("Project name {name} is illegal in length. (greater than 255 or less than 1)"),
        );
    }
    let legal = name
        .split(['.', '_', '-'])
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if !legal {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "project name is not in lower case or contains illegal characters",
        );
    }
    if state.projects.contains_key(&name) {
        return error(StatusCode::CONFLICT, "CONFLICT", &format!("The project named {name} already exists"));
    }
    let (owner, members) = match who {
        Principal::User { name: user, .. } => (user.clone(), HashMap::from([(user.clone(), Role::ProjectAdmin)])),
        // Robots own nothing: the first system administrator does (:193-209).
        _ => (ADMIN.0.to_owned(), HashMap::from([(ADMIN.0.to_owned(), Role::ProjectAdmin)])),
    };
    let id = state.next_id;
    state.next_id += 1;
    state.projects.insert(name.clone(), Project { id, name, public, owner, members, created: SystemTime::now() });
    let mut reply = reply(StatusCode::CREATED, "");
    reply
        .headers_mut()
        .insert("location", HeaderValue::from_str(&format!("/api/v2.0/projects/{id}")).expect("a header value"));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_found_in_registry_paths() {
        assert_eq!(repository_of("/v2/team/app/blobs/uploads/"), Some(("team/app".into(), "/blobs/uploads/".into())));
        assert_eq!(repository_of("/v2/a/b/c/manifests/1"), Some(("a/b/c".into(), "/manifests/1".into())));
        assert_eq!(repository_of("/v2/_catalog"), None);
        assert_eq!(repository_of("/v2/"), None);
    }

    #[test]
    fn queries_are_decoded() {
        assert_eq!(url_query("a=1&from=team%2Fapp&mount=sha256%3Aab", "from").as_deref(), Some("team/app"));
        assert_eq!(url_query("scope=repository%3Ax%3Apull+push", "scope").as_deref(), Some("repository:x:pull push"));
        assert_eq!(url_query("x=%", "x").as_deref(), Some("%"));
        assert_eq!(url_query("x=%4", "x").as_deref(), Some("%4"));
    }

    #[test]
    fn masked_csrf_tokens_unmask_to_the_real_one() {
        let signer = Signer::new("t");
        let real = signer.random_bytes(CSRF_TOKEN_LEN);
        let otp = signer.random_bytes(CSRF_TOKEN_LEN);
        let mut issued = otp.clone();
        issued.extend(otp.iter().zip(&real).map(|(a, b)| a ^ b));
        let masked = base64::engine::general_purpose::STANDARD.encode(issued);
        assert_eq!(unmask(&masked).unwrap(), real);
        assert!(unmask("short").is_none());
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
