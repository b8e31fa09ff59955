//! Authentication: challenges, scopes and the per-registry token session.
//!
//! Registries say how to authenticate in a `401` with `WWW-Authenticate`.
//! [`parse_challenges`] reads every challenge in every such header (quoted
//! strings with commas and backslash escapes, unquoted values, several
//! challenges per header). The session (`HostAuth`, one per registry host
//! and shared by every repository handle of a [`Client`])
//! then answers:
//!
//! - `Basic`: the credential's user and password on every request (ECR and
//!   htpasswd registries);
//! - `Bearer`: a token from the challenge's realm for the request's
//!   [`Scope`]s — `GET realm?service=…&scope=…&scope=…` with Basic
//!   credentials, or with an identity (refresh) token an OAuth2
//!   `POST grant_type=refresh_token`, falling back to the GET on 400, 401,
//!   404 or 405. `token` or `access_token` is accepted; `expires_in`
//!   (default 60 s) is honoured and tokens are renewed a little before they
//!   run out; a later `401` (the token died early, or `insufficient_scope`)
//!   fetches a fresh one and the request is sent once more.
//!
//! Tokens are cached per scope set. Credentials never travel over plain HTTP
//! to a host that is not loopback unless the user asked for plain HTTP to
//! that host, and Basic credentials go only to the realm's host.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use crate::credentials::{Credential, CredentialSource, Secret};
use crate::{Client, ErrorKind, RegistryError};

/// What the token spec says a missing `expires_in` means.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longer lifetimes are believed only this far.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Renew this long before a token runs out (less for very short tokens).
const RENEW_EARLY: Duration = Duration::from_secs(5);
/// Token responses are small JSON; refuse anything absurd.
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;
/// Sent as OAuth2 `client_id`, which the spec requires on POST.
const CLIENT_ID: &str = "hoist";

/// One challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme in lower case: `bearer`, `basic`, …
    pub scheme: String,
    /// Parameters in order, names in lower case. A token68 value has an empty name.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Every challenge in one `WWW-Authenticate` value (RFC 7235 grammar,
/// tolerant of stray whitespace and empty list elements). Never fails:
/// what cannot be read is skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut parser = Parser { s: header.as_bytes(), i: 0 };
    let mut challenges: Vec<Challenge> = Vec::new();
    loop {
        parser.skip_separators();
        let Some(scheme) = parser.token() else {
            if parser.at_end() {
                return challenges;
            }
            parser.i += 1; // not a token character: skip it
            continue;
        };
        let mut challenge = Challenge { scheme: scheme.to_ascii_lowercase(), params: Vec::new() };
        loop {
            parser.skip_ws();
            let start = parser.i;
            let Some(name) = parser.token() else { break };
            parser.skip_ws();
            if parser.peek() != Some(b'=') {
                // `name` is the next challenge's scheme.
                parser.i = start;
                break;
            }
            parser.i += 1;
            if matches!(parser.peek(), Some(b'=' | b',') | None) || parser.rest_is_ws() {
                // token68 (`Basic dXNlcg==`): the name and its padding are the value.
                let mut value = name;
                value.push('=');
                while parser.peek() == Some(b'=') {
                    value.push('=');
                    parser.i += 1;
                }
                challenge.params.push((String::new(), value));
            } else {
                parser.skip_ws();
                let value = if parser.peek() == Some(b'"') { parser.quoted() } else { parser.value() };
                challenge.params.push((name.to_ascii_lowercase(), value));
            }
            parser.skip_ws();
            if parser.peek() == Some(b',') {
                parser.i += 1;
                continue;
            }
            break;
        }
        challenges.push(challenge);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn rest_is_ws(&self) -> bool {
        self.s[self.i.min(self.s.len())..].iter().all(u8::is_ascii_whitespace)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == b' ' || c == b'\t') {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while self.peek().is_some_and(|c| c == b' ' || c == b'\t' || c == b',') {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// An unquoted value: anything up to a comma or whitespace.
    fn value(&mut self) -> String {
        let start = self.i;
        while self.peek().is_some_and(|c| c != b',' && !c.is_ascii_whitespace()) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string with backslash escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// One access scope: `repository:team/app:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// `repository:<name>:<actions>`.
    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Self {
            resource_type: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Reads one scope. The name may contain a `:port`, so the type ends at
    /// the first colon and the actions start after the last one.
    pub fn parse(text: &str) -> Option<Self> {
        let (resource_type, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if resource_type.is_empty() || name.is_empty() {
            return None;
        }
        // `repository(plugin)` is a deprecated spelling of `repository`.
        let resource_type = resource_type.split('(').next().unwrap_or(resource_type);
        Some(Self {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
        })
    }

    /// True if this scope grants everything `other` asks for.
    fn covers(&self, other: &Self) -> bool {
        self.resource_type == other.resource_type
            && self.name == other.name
            && other.actions.iter().all(|a| self.actions.contains(a) || self.actions.iter().any(|s| s == "*"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.resource_type, self.name, self.actions.join(","))
    }
}

/// Merges scopes for the same resource (`pull` + `push` → `pull,push`),
/// keeping the first resource first: some registries read only the first.
pub(crate) fn merge_scopes(scopes: impl IntoIterator<Item = Scope>) -> Vec<Scope> {
    let mut merged: Vec<Scope> = Vec::new();
    for scope in scopes {
        match merged.iter_mut().find(|m| m.resource_type == scope.resource_type && m.name == scope.name) {
            Some(existing) => {
                for action in scope.actions {
                    if !existing.actions.contains(&action) {
                        existing.actions.push(action);
                    }
                }
            }
            None => merged.push(scope),
        }
    }
    merged
}

/// How a registry wants to be spoken to, learned from its first 401.
#[derive(Clone, Debug)]
enum Scheme {
    Unknown,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

#[derive(Debug)]
struct Token {
    value: Secret,
    scopes: Vec<Scope>,
    renew_at: Instant,
}

#[derive(Debug)]
struct State {
    scheme: Scheme,
    tokens: Vec<Token>,
    /// A refresh token the token server handed out; used like an identity token.
    refresh_token: Option<Secret>,
}

/// The authentication session for one registry host.
#[derive(Debug)]
pub(crate) struct HostAuth {
    /// The registry as written in references, for credential lookup.
    registry: String,
    /// Whether the user allowed plain HTTP to this registry (so also to its realm).
    plain_http_allowed: bool,
    credential: OnceCell<Option<(Credential, CredentialSource)>>,
    state: Mutex<State>,
    /// Held while a token is fetched, so that only one fetch runs.
    fetching: Mutex<()>,
}

/// The header to send, and whether it carries a credential the user gave
/// (as opposed to nothing, or a token).
pub(crate) type Authorization = Option<HeaderValue>;

impl HostAuth {
    pub(crate) fn new(registry: String, plain_http_allowed: bool) -> Self {
        Self {
            registry,
            plain_http_allowed,
            credential: OnceCell::new(),
            state: Mutex::new(State { scheme: Scheme::Unknown, tokens: Vec::new(), refresh_token: None }),
            fetching: Mutex::new(()),
        }
    }

    pub(crate) async fn credential(
        &self,
        client: &Client,
    ) -> Result<Option<&(Credential, CredentialSource)>, RegistryError> {
        let found = self
            .credential
            .get_or_try_init(|| async {
                // A helper gets as long as two stalled requests would.
                let store = client.options().credentials.clone().with_helper_deadline(client.options().timeout * 2);
                let registry = self.registry.clone();
                // Helpers are processes; keep them off the async workers.
                let found = tokio::task::spawn_blocking(move || store.lookup(&registry)).await.map_err(|e| {
                    RegistryError::new(ErrorKind::Local, "look up credentials").with_detail(e.to_string())
                })??;
                match &found {
                    Some((_, source)) => tracing::debug!(registry = %self.registry, %source, "using credentials"),
                    None => tracing::debug!(registry = %self.registry, "no credentials: anonymous"),
                }
                Ok::<_, RegistryError>(found)
            })
            .await?;
        Ok(found.as_ref())
    }

    /// The `Authorization` for a request to `url` needing `scopes`, from
    /// what earlier challenges taught; `None` before the first challenge.
    pub(crate) async fn authorization(
        &self,
        client: &Client,
        url: &Url,
        scopes: &[Scope],
        limit: Duration,
    ) -> Result<Authorization, RegistryError> {
        let scheme = self.state.lock().await.scheme.clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => self.basic_for_registry(client, url).await,
            Scheme::Bearer { realm, service } => {
                if let Some(value) = self.cached_token(scopes).await {
                    return Ok(Some(bearer(&value)));
                }
                // One fetch at a time: concurrent uploads that all need a
                // token wait for the first one's instead of each asking.
                let _fetching = self.fetching.lock().await;
                if let Some(value) = self.cached_token(scopes).await {
                    return Ok(Some(bearer(&value)));
                }
                self.fetch_token(client, &realm, service.as_deref(), scopes, limit).await.map(|v| Some(bearer(&v)))
            }
        }
    }

    /// Answers a 401: learns the scheme from the challenges and returns the
    /// header to resend with, or `None` when resending cannot help (no
    /// credentials, or the same credentials were just refused).
    pub(crate) async fn answer(
        &self,
        client: &Client,
        url: &Url,
        headers: &HeaderMap,
        scopes: &[Scope],
        sent: Option<&HeaderValue>,
        limit: Duration,
    ) -> Result<Authorization, RegistryError> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(challenge) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = self.realm(url, challenge)?;
            let service = challenge.param("service").map(str::to_owned);
            // `insufficient_scope` (or any challenge naming scopes) says what to ask for.
            let mut wanted = scopes.to_vec();
            if let Some(asked) = challenge.param("scope") {
                wanted.extend(asked.split(' ').filter_map(Scope::parse));
            }
            let wanted = merge_scopes(wanted);
            let _fetching = self.fetching.lock().await;
            {
                let mut state = self.state.lock().await;
                state.scheme = Scheme::Bearer { realm: realm.clone(), service: service.clone() };
                // The token just refused is dead; one fetched meanwhile by
                // a concurrent request is not, and serves this one too.
                let refused = sent.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
                state.tokens.retain(|t| Some(t.value.expose()) != refused);
            }
            if let Some(value) = self.cached_token(&wanted).await {
                return Ok(Some(bearer(&value)));
            }
            return self
                .fetch_token(client, &realm, service.as_deref(), &wanted, limit)
                .await
                .map(|v| Some(bearer(&v)));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let was_basic = {
                let mut state = self.state.lock().await;
                std::mem::replace(&mut state.scheme, Scheme::Basic)
            };
            if sent.is_some() && matches!(was_basic, Scheme::Basic) {
                return Ok(None);
            }
            return self.basic_for_registry(client, url).await;
        }
        Ok(None)
    }

    /// Basic credentials for the registry itself, if there are any and the
    /// transport is fit for them.
    async fn basic_for_registry(&self, client: &Client, url: &Url) -> Result<Authorization, RegistryError> {
        let Some((credential, source)) = self.credential(client).await? else { return Ok(None) };
        let (username, password) = match credential {
            Credential::Basic { username, password } => (username.as_str(), password),
            Credential::IdentityToken { username, token } => (username.as_deref().unwrap_or("<token>"), token),
            Credential::RegistryToken(token) => return Ok(Some(bearer(token))),
        };
        self.check_transport(url, source)?;
        Ok(Some(hoist_http::basic_authorization(username, password)))
    }

    /// What to tell the user when the registry still answers 401.
    pub(crate) async fn refusal_hint(&self, client: &Client) -> String {
        match self.credential(client).await {
            Ok(Some((_, source))) => format!(
                "{} refused the credentials from {source}: check the user name and password (or token)",
                self.registry
            ),
            _ => format!(
                "{} needs credentials: give `--username` with `--password-stdin`, set \
                 HOIST_USERNAME/HOIST_PASSWORD, or `docker login {}` first",
                self.registry, self.registry
            ),
        }
    }

    async fn cached_token(&self, scopes: &[Scope]) -> Option<Secret> {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        state.tokens.retain(|t| t.renew_at > now);
        state
            .tokens
            .iter()
            .find(|t| scopes.iter().all(|want| t.scopes.iter().any(|have| have.covers(want))))
            .map(|t| t.value.clone())
    }

    /// Validates a realm: absolute, and https unless the registry itself is
    /// reached over plain HTTP by the user's choice or is on loopback.
    fn realm(&self, url: &Url, challenge: &Challenge) -> Result<Url, RegistryError> {
        let action = format!("authenticate to {}", self.registry);
        let text = challenge.param("realm").ok_or_else(|| {
            RegistryError::new(ErrorKind::Protocol, &action)
                .with_url(url)
                .with_detail("its Bearer challenge has no realm")
        })?;
        let realm = Url::parse(text).map_err(|e| {
            RegistryError::new(ErrorKind::Protocol, &action)
                .with_url(url)
                .with_detail(format!("its realm is not a URL: {e}"))
        })?;
        // A registry reached over HTTPS must not send us to plain HTTP for
        // tokens (GGCR's rule); one reached over plain HTTP may, and so may
        // a realm on loopback, where nothing crosses the network.
        let allowed = match realm.scheme() {
            "https" => true,
            "http" => url.scheme() == "http" || is_loopback_url(&realm),
            _ => false,
        };
        if !allowed {
            return Err(RegistryError::new(ErrorKind::Protocol, action).with_url(url).with_detail(format!(
                "its token realm {} is not HTTPS, though the registry is",
                crate::RedactedUrl::new(realm)
            )));
        }
        Ok(realm)
    }

    /// Refuses to send a credential over plain HTTP to a host that is not
    /// loopback, unless the user asked for plain HTTP to this registry.
    fn check_transport(&self, target: &Url, source: &CredentialSource) -> Result<(), RegistryError> {
        // Plain HTTP chosen for a registry covers that host (Harbor's realm is on it), not others.
        let chosen = self.plain_http_allowed && target.host_str() == Some(hoist_oci::host_without_port(&self.registry));
        if target.scheme() == "https" || chosen || is_loopback_url(target) {
            return Ok(());
        }
        let hint = if target.host_str() == Some(hoist_oci::host_without_port(&self.registry)) {
            format!(
                "if {} really only speaks plain HTTP, say so with `--plain-http` (or `--registry http://…`)",
                self.registry
            )
        } else {
            // `--plain-http` covers the registry's own host only: it cannot help here.
            format!(
                "{} sends clients to {} over plain HTTP for tokens; hoist sends credentials in the clear only to \
                 the registry you named. Serve the token service over HTTPS (or on the registry's own host)",
                self.registry,
                target.host_str().unwrap_or_default()
            )
        };
        Err(RegistryError::new(ErrorKind::Unauthorized, format!("authenticate to {}", self.registry))
            .with_url(target)
            .with_detail(format!("refusing to send the credentials from {source} over plain HTTP"))
            .with_hint(hint))
    }

    /// Gets a token for `scopes` from the realm, and caches it.
    async fn fetch_token(
        &self,
        client: &Client,
        realm: &Url,
        service: Option<&str>,
        scopes: &[Scope],
        limit: Duration,
    ) -> Result<Secret, RegistryError> {
        let action = if scopes.is_empty() {
            format!("get a token from {}", self.registry)
        } else {
            format!("get a token for {} from {}", join_scopes(scopes, " "), self.registry)
        };
        let credential = self.credential(client).await?;
        if let Some((Credential::RegistryToken(token), _)) = credential {
            return Ok(token.clone());
        }
        let refresh = {
            let state = self.state.lock().await;
            state.refresh_token.clone()
        };
        let refresh = refresh.or_else(|| match credential {
            Some((Credential::IdentityToken { token, .. }, _)) => Some(token.clone()),
            _ => None,
        });
        // Whichever request goes, it carries the credential: never in the clear elsewhere.
        if let Some((_, source)) = credential {
            self.check_transport(realm, source)?;
        }
        let request =
            TokenRequest { http: client.http_for(realm), limit, action: &action, realm, service, scopes, credential };
        let answer = match &refresh {
            Some(refresh) => request.post_refresh(refresh).await?,
            None => None,
        };
        let response = match answer {
            Some(response) => response,
            None => request.get().await?,
        };
        let body = crate::wire::read_capped(&action, realm, response, MAX_TOKEN_RESPONSE, limit).await?;
        let parsed = TokenResponse::parse(&body)
            .map_err(|detail| RegistryError::new(ErrorKind::Protocol, &action).with_url(realm).with_detail(detail))?;
        let (value, lifetime) = (parsed.token, parsed.lifetime);
        // Short tokens are renewed after two thirds of their life; long ones 5 s early.
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_EARLY.min(lifetime / 3));
        let mut state = self.state.lock().await;
        if let Some(refresh) = parsed.refresh_token {
            state.refresh_token = Some(refresh);
        }
        state.tokens.push(Token { value: value.clone(), scopes: scopes.to_vec(), renew_at });
        tracing::debug!(scopes = %join_scopes(scopes, " "), lifetime_s = lifetime.as_secs(), "got a token");
        Ok(value)
    }
}

/// One request for a token: where to, for what, with which credential.
struct TokenRequest<'a> {
    http: reqwest::Client,
    /// How long the token server may go without progress.
    limit: Duration,
    action: &'a str,
    realm: &'a Url,
    service: Option<&'a str>,
    scopes: &'a [Scope],
    credential: Option<&'a (Credential, CredentialSource)>,
}

impl TokenRequest<'_> {
    async fn deliver(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, RegistryError> {
        crate::wire::send(request, &crate::wire::Activity::new(), self.limit, self.action, self.realm).await
    }

    /// OAuth2: `POST grant_type=refresh_token`. `None` when the token server
    /// does not do OAuth2 (400, 401, 404, 405), so the caller falls back to GET.
    async fn post_refresh(&self, refresh: &Secret) -> Result<Option<reqwest::Response>, RegistryError> {
        let scope = join_scopes(self.scopes, " ");
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
            ("service", self.service.unwrap_or_default()),
            ("client_id", CLIENT_ID),
            ("scope", &scope),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        tracing::debug!(realm = %crate::RedactedUrl::new(self.realm.clone()), "POST for a token (OAuth2 refresh)");
        let request = self
            .http
            .post(self.realm.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let response = self.deliver(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(Some(response)),
            // Token servers without OAuth2 answer these; the GET works everywhere.
            400 | 401 | 404 | 405 => {
                tracing::debug!(status = %response.status(), "the token server refused the POST; trying GET");
                Ok(None)
            }
            _ => Err(token_error(self.action, self.realm, response, self.credential).await),
        }
    }

    /// `GET realm?service=…&scope=…` with Basic credentials if there are any.
    async fn get(&self) -> Result<reqwest::Response, RegistryError> {
        let mut url = self.realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = self.service {
                query.append_pair("service", service);
            }
            for scope in self.scopes {
                query.append_pair("scope", &scope.to_string());
            }
            if let Some((Credential::Basic { username, .. }, _)) = self.credential {
                query.append_pair("account", username);
            }
        }
        let mut request = self.http.get(url);
        let basic_credential = match self.credential {
            Some((Credential::Basic { username, password }, _)) => Some((username.as_str(), password)),
            Some((Credential::IdentityToken { username, token }, _)) => {
                Some((username.as_deref().unwrap_or("<token>"), token))
            }
            _ => None,
        };
        if let Some((username, password)) = basic_credential {
            request = request.header(AUTHORIZATION, hoist_http::basic_authorization(username, password));
        }
        tracing::debug!(realm = %crate::RedactedUrl::new(self.realm.clone()), "GET a token");
        let response = self.deliver(request).await?;
        if !response.status().is_success() {
            return Err(token_error(self.action, self.realm, response, self.credential).await);
        }
        Ok(response)
    }
}

/// What a token server answered, read leniently.
#[derive(Debug)]
struct TokenResponse {
    token: Secret,
    lifetime: Duration,
    refresh_token: Option<Secret>,
}

impl TokenResponse {
    /// `token` or `access_token` (whichever is non-empty); `expires_in` as a
    /// number or a numeric string, default 60 s, capped at a day so that no
    /// answer can overflow a clock; `refresh_token` if any.
    fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
            #[serde(default)]
            refresh_token: Option<String>,
        }
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| format!("the token server's answer is not a token response: {e}"))?;
        let non_empty = |t: Option<String>| t.filter(|t| !t.is_empty());
        let token = non_empty(raw.token)
            .or(non_empty(raw.access_token))
            .ok_or("the token server's answer holds neither `token` nor `access_token`")?;
        let seconds = match raw.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let lifetime = seconds
            .filter(|s| s.is_finite() && *s >= 1.0)
            .map_or(DEFAULT_TOKEN_LIFETIME, |s| Duration::from_secs_f64(s.min(MAX_TOKEN_LIFETIME.as_secs_f64())));
        Ok(Self { token: Secret::new(token), lifetime, refresh_token: non_empty(raw.refresh_token).map(Secret::new) })
    }
}

fn join_scopes(scopes: &[Scope], separator: &str) -> String {
    scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(separator)
}

fn bearer(token: &Secret) -> HeaderValue {
    hoist_http::sensitive_header(&format!("Bearer {}", token.expose()))
}

/// `host:port` → `host`; `[::1]:5000` → `::1`.
fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

async fn token_error(
    action: &str,
    realm: &Url,
    response: reqwest::Response,
    credential: Option<&(Credential, CredentialSource)>,
) -> RegistryError {
    let status = response.status();
    let body = crate::wire::error_body(response).await;
    let error = RegistryError::from_response(action, realm, status.as_u16(), &body);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let hint = match credential {
            Some((_, source)) => {
                format!("the token server refused the credentials from {source}: check the user name and password")
            }
            None => {
                "the registry needs credentials: give `--username` with `--password-stdin`, or `docker login` first"
                    .into()
            }
        };
        return error.with_hint(hint);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_docker_hub_style_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("scope"), Some("repository:samalba/my-app:pull,push"));
    }

    #[test]
    fn reads_several_challenges_unquoted_values_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a \"quoted\", realm", Bearer realm=https://r/t , service=svc,error="insufficient_scope",  Negotiate dXNlcg==, Digest"#,
        );
        let schemes: Vec<_> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate", "digest"]);
        assert_eq!(c[0].param("realm"), Some(r#"a "quoted", realm"#));
        assert_eq!(c[1].param("realm"), Some("https://r/t"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[2].params, [(String::new(), "dXNlcg==".to_owned())]);
        assert!(c[3].params.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        for input in ["", ",,,", "=", "\"", "Bearer realm=\"unterminated", "Bearer ,=,", "\u{e9}\u{e9} x=\u{e9}"] {
            let _ = parse_challenges(input);
        }
    }

    #[test]
    fn scopes_keep_ports_in_names_and_merge_actions() {
        let s = Scope::parse("repository:localhost:5000/app:pull,push").unwrap();
        assert_eq!(s.name, "localhost:5000/app");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(Scope::parse("repository(plugin):x:pull").unwrap().resource_type, "repository");
        assert!(Scope::parse("nonsense").is_none());
        let merged = merge_scopes([
            Scope::repository("dst", &["pull", "push"]),
            Scope::repository("src", &["pull"]),
            Scope::repository("dst", &["pull"]),
        ]);
        assert_eq!(join_scopes(&merged, " "), "repository:dst:pull,push repository:src:pull");
        assert!(merged[0].covers(&Scope::repository("dst", &["pull"])));
        assert!(!merged[1].covers(&Scope::repository("src", &["push"])));
    }

    #[test]
    fn credentials_stay_off_plain_http_unless_chosen_for_that_host() {
        let source = CredentialSource::Explicit;
        let url = |u: &str| Url::parse(u).unwrap();
        let chosen = HostAuth::new("reg.example:5000".into(), true);
        assert!(chosen.check_transport(&url("http://reg.example:5001/token"), &source).is_ok());
        assert!(chosen.check_transport(&url("http://auth.example/token"), &source).is_err());
        let default = HostAuth::new("reg.example:5000".into(), false);
        assert!(default.check_transport(&url("http://reg.example:5000/v2/"), &source).is_err());
        assert!(default.check_transport(&url("https://auth.example/token"), &source).is_ok());
        assert!(default.check_transport(&url("http://127.0.0.1:9/token"), &source).is_ok());
        assert!(default.check_transport(&url("http://localhost/token"), &source).is_ok());
        assert!(default.check_transport(&url("http://[::1]:80/token"), &source).is_ok());
    }

    #[test]
    fn realms_must_be_https_when_the_registry_is() {
        let auth = HostAuth::new("reg.example".into(), false);
        let challenge = |realm: &str| parse_challenges(&format!("Bearer realm=\"{realm}\"")).remove(0);
        let https = Url::parse("https://reg.example/v2/").unwrap();
        let http = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert!(auth.realm(&https, &challenge("https://auth.example/token")).is_ok());
        assert!(auth.realm(&https, &challenge("http://auth.example/token")).is_err());
        assert!(auth.realm(&https, &challenge("ftp://auth.example/token")).is_err());
        assert!(auth.realm(&https, &challenge("not a url")).is_err());
        assert!(auth.realm(&http, &challenge("http://127.0.0.1:9/token")).is_ok());
        assert!(auth.realm(&https, &challenge("http://localhost:9/token")).is_ok());
    }

    #[test]
    fn token_responses_are_read_leniently() {
        let r = TokenResponse::parse(br#"{"token":"t","expires_in":300}"#).unwrap();
        assert_eq!((r.token.expose(), r.lifetime), ("t", Duration::from_secs(300)));
        let r =
            TokenResponse::parse(br#"{"token":"","access_token":"a","expires_in":"120","refresh_token":"r"}"#).unwrap();
        assert_eq!((r.token.expose(), r.lifetime), ("a", Duration::from_secs(120)));
        assert_eq!(r.refresh_token.unwrap().expose(), "r");
        let r = TokenResponse::parse(br#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.lifetime, DEFAULT_TOKEN_LIFETIME);
        for absurd in ["1e300", "18446744073709551615", "-5", "0", "\"soon\"", "null"] {
            let body = format!(r#"{{"token":"t","expires_in":{absurd}}}"#);
            let r = TokenResponse::parse(body.as_bytes()).unwrap();
            assert!(r.lifetime <= MAX_TOKEN_LIFETIME, "{absurd}");
            let _ = Instant::now() + r.lifetime; // must not overflow
        }
        assert!(TokenResponse::parse(br#"{"token":""}"#).is_err());
        assert!(TokenResponse::parse(b"<html>").is_err());
    }

    fn quote(value: &str) -> String {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        #[test]
        fn quoted_params_round_trip(realm in "[ -~]{0,40}", service in "[ -~]{0,40}", scope in "[a-z/:,]{1,30}") {
            let header = format!(
                "Bearer realm={},service={}, scope={}, Basic realm={}",
                quote(&realm), quote(&service), quote(&scope), quote(&service)
            );
            let c = parse_challenges(&header);
            prop_assert_eq!(c.len(), 2);
            prop_assert_eq!(c[0].param("realm"), Some(realm.as_str()));
            prop_assert_eq!(c[0].param("service"), Some(service.as_str()));
            prop_assert_eq!(c[0].param("scope"), Some(scope.as_str()));
            prop_assert_eq!(&c[1].scheme, "basic");
            prop_assert_eq!(c[1].param("realm"), Some(service.as_str()));
        }

        #[test]
        fn arbitrary_headers_never_panic(header in "\\PC{0,80}") {
            let _ = parse_challenges(&header);
        }
    }
}
