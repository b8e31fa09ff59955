//! Requests to Harbor's API: one path for all, retried and bounded as
//! every hoist request is (hoist-http), authenticated one of two ways.
//!
//! - [`LoginMode::Basic`]: `Authorization: Basic` on every request, on a
//!   client that keeps no cookies. Harbor checks CSRF only on requests that
//!   carry its session cookie `sid`, so these need no token
//!   (`src/server/middleware/csrf/csrf.go` `csrfSkipper`: `/api/` paths
//!   skip the check unless the request carries a session). Harbor sets
//!   `sid` on its answers anyway (beego sessions are on for every request):
//!   a client that kept it would start failing its POSTs, so none is kept.
//! - [`LoginMode::Session`]: what Harbor's web UI does, for deployments
//!   whose front end refuses Basic on the API: `POST /c/login` with the
//!   form `principal` and `password` gives a `sid` cookie; every request
//!   then carries it, and every unsafe one also `X-Harbor-CSRF-Token` with
//!   the `_gorilla_csrf` cookie it belongs to. The token comes in the
//!   `X-Harbor-CSRF-Token` header of Harbor's answers; a request refused
//!   403 "CSRF token invalid" (or "not found in request") is sent once more
//!   with the token that refusal carried, as the UI does
//!   (`src/portal/src/app/services/intercept-http.service.ts`).
//!
//! Cookies and tokens are [`Secret`]s and go in sensitive headers; none is
//! ever logged.

use bytes::Bytes;
use hoist_http::retry::RetryContext;
use hoist_http::wire::{self, Activity};
use hoist_http::{RedactedUrl, Secret, Transport};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;
use url::Url;

use crate::error::parse_errors;
use crate::{HarborError, HarborErrorKind};

/// Harbor's CSRF header, on answers (the token) and requests (sent back).
const CSRF_HEADER: &str = "X-Harbor-CSRF-Token";
/// gorilla/csrf's cookie, holding the real token the header's is masked from.
const CSRF_COOKIE: &str = "_gorilla_csrf";
/// Harbor's session cookie (`src/lib/config/config.go` `SessionCookieName`).
const SESSION_COOKIE: &str = "sid";
/// Answers hoist reads whole (a project list, system info) are small JSON.
pub(crate) const MAX_ANSWER: usize = 1024 * 1024;

/// How to authenticate to the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoginMode {
    /// `Authorization: Basic` on every request, no cookies, no CSRF.
    #[default]
    Basic,
    /// A cookie session from `POST /c/login`, with the CSRF token.
    Session,
}

/// Who to be, and how.
#[derive(Clone, Debug)]
pub struct Login {
    pub username: String,
    pub password: Secret,
    /// Where the credentials came from, for messages ("the credentials from
    /// ~/.docker/config.json").
    pub source: String,
    pub mode: LoginMode,
}

/// What a cookie session holds.
#[derive(Debug, Default)]
struct Session {
    sid: Option<Secret>,
    csrf_cookie: Option<Secret>,
    csrf_token: Option<Secret>,
}

/// A request body hoist sends: small, so that a retry can send it again.
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    Json(Vec<u8>),
    Form(String),
}

/// A client for one Harbor's REST API (`/api/v2.0/…`, and `/c/login` for a
/// session).
#[derive(Debug)]
pub struct HarborClient {
    transport: Transport,
    http: reqwest::Client,
    base: Url,
    /// `host[:port]`, for messages.
    host: String,
    login: Option<Login>,
    session: Mutex<Option<Session>>,
}

impl HarborClient {
    /// A client for the Harbor at `registry` (`host[:port]`), spoken to over
    /// plain HTTP or HTTPS as `transport` decides for it (as the registry
    /// client does: loopback is plain unless asked otherwise).
    pub fn for_registry(transport: &Transport, registry: &str, login: Option<Login>) -> Result<Self, HarborError> {
        let scheme = if transport.uses_plain_http(registry) { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
            HarborError::new(HarborErrorKind::InvalidName, format!("reach Harbor at `{registry}`"))
                .with_detail(e.to_string())
        })?;
        Ok(Self::new(transport, &base, login))
    }

    /// A client for the Harbor at `url`'s scheme, host and port (any path is
    /// dropped: the registry's own `/v2/` URL will do).
    pub fn new(transport: &Transport, url: &Url, login: Option<Login>) -> Self {
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        let host = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        Self {
            transport: transport.clone(),
            http: transport.pool_for(&base),
            base,
            host,
            login,
            session: Mutex::default(),
        }
    }

    /// `host[:port]` of this Harbor.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn login(&self) -> Option<&Login> {
        self.login.as_ref()
    }

    /// `path` (with its query) on this Harbor.
    pub(crate) fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths are relative URLs")
    }

    /// Sends one API request, authenticated as the login says; retried as
    /// every hoist request is. In a session, logs in first, and sends again
    /// once with a fresh CSRF token if the one sent was refused.
    pub(crate) async fn send(
        &self,
        action: &str,
        method: Method,
        url: &Url,
        payload: Option<Payload>,
    ) -> Result<reqwest::Response, HarborError> {
        let session = matches!(&self.login, Some(login) if login.mode == LoginMode::Session);
        if !session {
            return self.deliver(action, method, url, payload.as_ref(), &Session::default()).await;
        }
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            *guard = Some(self.log_in(action).await?);
        }
        let state = guard.as_mut().expect("logged in just now");
        let mut response = self.deliver(action, method.clone(), url, payload.as_ref(), state).await?;
        absorb(state, response.headers());
        if is_unsafe(&method) && response.status() == StatusCode::FORBIDDEN {
            match csrf_refusal(response).await {
                Ok(refusal) => {
                    tracing::debug!(%refusal, "Harbor refused the CSRF token; sending once more with the one it gave");
                    response = self.deliver(action, method, url, payload.as_ref(), state).await?;
                    absorb(state, response.headers());
                }
                // Another refusal: the caller reads it as it would have.
                Err(other) => response = other,
            }
        }
        Ok(response)
    }

    /// `POST /c/login`, as Harbor's UI does; the session it opens.
    async fn log_in(&self, action: &str) -> Result<Session, HarborError> {
        let Some(login) = &self.login else {
            return Err(HarborError::new(HarborErrorKind::Unauthorized, action)
                .with_detail("a session needs credentials")
                .with_hint(self.no_credentials_hint()));
        };
        let url = self.url("c/login");
        let action = format!("log in to Harbor at {} as {}", self.host, login.username);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("principal", &login.username)
            .append_pair("password", login.password.expose())
            .finish();
        let mut session = Session::default();
        // The first POST has no CSRF token yet: Harbor refuses it and hands one out.
        for attempt in 0..2 {
            let response =
                self.deliver(&action, Method::POST, &url, Some(&Payload::Form(form.clone())), &session).await?;
            absorb(&mut session, response.headers());
            match response.status() {
                status if status.is_success() => {
                    if session.sid.is_none() {
                        return Err(HarborError::new(HarborErrorKind::Protocol, &action)
                            .with_url(&url)
                            .with_detail("the login succeeded but set no `sid` session cookie"));
                    }
                    tracing::debug!(host = %self.host, "logged in to Harbor: cookie session");
                    return Ok(session);
                }
                StatusCode::FORBIDDEN if attempt == 0 => {
                    // An OIDC user is sent to the identity provider instead (a 403
                    // with `redirect_location`): no session from a password.
                    if let Err(other) = csrf_refusal(response).await {
                        return Err(oidc_hint(error_from(&action, &url, other).await, login));
                    }
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(HarborError::new(HarborErrorKind::Unauthorized, &action).with_url(&url).with_hint(
                        format!(
                            "Harbor refused the login of `{}` (credentials from {}): check the user name and \
                             password",
                            login.username, login.source
                        ),
                    ));
                }
                _ => return Err(oidc_hint(error_from(&action, &url, response).await, login)),
            }
        }
        Err(HarborError::new(HarborErrorKind::Protocol, &action)
            .with_url(&url)
            .with_detail("Harbor refused the CSRF token it had just handed out"))
    }

    /// One request with the login's headers and the session's cookies.
    async fn deliver(
        &self,
        action: &str,
        method: Method,
        url: &Url,
        payload: Option<&Payload>,
        session: &Session,
    ) -> Result<reqwest::Response, HarborError> {
        tracing::debug!(url = %RedactedUrl::new(url.clone()), "{action}");
        let mut request = self.http.request(method.clone(), url.clone());
        match payload {
            Some(Payload::Json(body)) => {
                request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
            }
            Some(Payload::Form(body)) => {
                request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.clone());
            }
            None => {}
        }
        if let Some(login) = &self.login
            && login.mode == LoginMode::Basic
        {
            request = request.header(AUTHORIZATION, hoist_http::basic_authorization(&login.username, &login.password));
        }
        let cookies: Vec<String> = [(SESSION_COOKIE, &session.sid), (CSRF_COOKIE, &session.csrf_cookie)]
            .into_iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", v.expose())))
            .collect();
        if !cookies.is_empty() {
            request = request.header(COOKIE, hoist_http::sensitive_header(&cookies.join("; ")));
        }
        if is_unsafe(&method)
            && let Some(token) = &session.csrf_token
        {
            request = request.header(CSRF_HEADER, hoist_http::sensitive_header(token.expose()));
        }
        let options = self.transport.options();
        let context =
            RetryContext { policy: options.retry.clone(), observer: options.on_retry.as_ref(), counter: None };
        let limit = options.timeout;
        hoist_http::retry::with_retries(context, action, url, request, |request| async move {
            wire::send(request, &Activity::new(), limit).await.map_err(|e| HarborError::from(e.into_error(action, url)))
        })
        .await
    }

    /// Reads a small JSON answer whole (at most 1 MiB, each piece within the timeout).
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        url: &Url,
        response: reqwest::Response,
    ) -> Result<T, HarborError> {
        let body: Bytes = wire::read_capped(action, url, response, MAX_ANSWER, self.transport.options().timeout)
            .await
            .map_err(HarborError::from)?;
        serde_json::from_slice(&body).map_err(|e| {
            HarborError::new(HarborErrorKind::Protocol, action)
                .with_url(url)
                .with_detail(format!("the answer is not the JSON Harbor's API gives: {e}"))
        })
    }

    /// What to say when Harbor wants credentials and there are none.
    pub(crate) fn no_credentials_hint(&self) -> String {
        format!(
            "Harbor's API needs credentials (and so does pushing to Harbor): `hoist login {host}`, or give \
             `--username` with `--password-stdin`",
            host = self.host
        )
    }

    /// What to say when Harbor refused the credentials.
    pub(crate) fn refused_hint(&self) -> String {
        match &self.login {
            Some(login) => format!(
                "{} refused the credentials from {}: check the user name and password (a robot account's name is \
                 `robot$NAME`: quote the `$` in a shell)",
                self.host, login.source
            ),
            None => self.no_credentials_hint(),
        }
    }
}

/// The error for an unexpected answer, from its status and the start of its body.
pub(crate) async fn error_from(action: &str, url: &Url, response: reqwest::Response) -> HarborError {
    let status = response.status().as_u16();
    let body = wire::error_body(response).await;
    HarborError::from_answer(action, url, status, &body)
}

/// A 403 that is a CSRF refusal carrying a new token: `Ok` with its reason
/// (to send again); any other 403 comes back as an equivalent answer, for
/// the caller to read as usual (its body, at most what `error_body` keeps).
async fn csrf_refusal(response: reqwest::Response) -> Result<String, reqwest::Response> {
    let has_token = response.headers().contains_key(CSRF_HEADER);
    let (status, headers) = (response.status(), response.headers().clone());
    let body = wire::error_body(response).await;
    match parse_errors(&body).into_iter().find(|m| m.message.contains("CSRF token")) {
        Some(message) if has_token => Ok(message.message),
        _ => {
            let mut rebuilt = http::Response::new(body);
            *rebuilt.status_mut() = status;
            *rebuilt.headers_mut() = headers;
            Err(reqwest::Response::from(rebuilt))
        }
    }
}

/// An OIDC deployment answers a password login with 403 and the provider's
/// address: say so, since a session cannot come from a password there.
fn oidc_hint(error: HarborError, login: &Login) -> HarborError {
    if error.status() == Some(403) {
        return error.with_kind(HarborErrorKind::Unauthorized).with_hint(format!(
            "Harbor did not accept a password login for `{}`: if it logs users in through OIDC, log in with Basic \
             instead (no `--harbor-session`) using the CLI secret from your Harbor user profile",
            login.username
        ));
    }
    error
}

/// Takes the cookies and CSRF token a session needs from an answer.
fn absorb(session: &mut Session, headers: &HeaderMap) {
    for value in headers.get_all(SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let pair = text.split(';').next().unwrap_or_default();
        let Some((name, value)) = pair.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        // An expired cookie (Max-Age=0, an empty value) ends what it held.
        let gone = value.is_empty() || text.to_ascii_lowercase().contains("max-age=0");
        let slot = match name.trim() {
            SESSION_COOKIE => &mut session.sid,
            CSRF_COOKIE => &mut session.csrf_cookie,
            _ => continue,
        };
        *slot = if gone { None } else { Some(Secret::new(value)) };
    }
    if let Some(token) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()) {
        session.csrf_token = Some(Secret::new(token));
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn session_cookies_and_the_csrf_token_are_taken_from_answers() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("sid=abc123; Path=/; HttpOnly"));
        headers.append(SET_COOKIE, HeaderValue::from_static("_gorilla_csrf=\"MTY3|xyz\"; Path=/; SameSite=Strict"));
        headers.append(SET_COOKIE, HeaderValue::from_static("other=ignored"));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("masked-token"));
        let mut session = Session::default();
        absorb(&mut session, &headers);
        assert_eq!(session.sid.as_ref().map(Secret::expose), Some("abc123"));
        assert_eq!(session.csrf_cookie.as_ref().map(Secret::expose), Some("MTY3|xyz"));
        assert_eq!(session.csrf_token.as_ref().map(Secret::expose), Some("masked-token"));
        let mut expired = HeaderMap::new();
        expired.append(SET_COOKIE, HeaderValue::from_static("sid=; Max-Age=0"));
        absorb(&mut session, &expired);
        assert!(session.sid.is_none());
        assert!(session.csrf_token.is_some(), "no new token: the last one stays");
    }

    #[test]
    fn only_unsafe_methods_carry_the_csrf_token() {
        assert!(is_unsafe(&Method::POST) && is_unsafe(&Method::PUT) && is_unsafe(&Method::DELETE));
        assert!(!is_unsafe(&Method::GET) && !is_unsafe(&Method::HEAD));
    }
}
