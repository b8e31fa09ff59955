//! `PUT /api/push?dest=REF` (or `POST`): the request body is the archive,
//! read while it arrives and pushed by the same library call as
//! `hoist push -`. `POST /api/check` asks the same questions without a
//! body, so the page can tell a refusal before it sends gigabytes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use hoist_archive::ArchiveInput;
use hoist_oci::{Reference, RegistryTarget};
use hoist_registry::{Credential, CredentialStore, ErrorKind, RegistryError, Secret};
use hoist_transfer::{
    Destinations, NoReporter, PushError, PushRequest, PushRun, PushedImage, Reporter, check_destinations, push_archive,
};
use serde::Deserialize;

use super::events::{Channel, valid_id};
use super::{AppState, LogNote};
use crate::failure::{self, Exit};
use crate::harbor::HarborProjects;
use crate::reporter::JsonReporter;

/// Progress events go to the page at most this often per layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the page and curl say about a push, in the query.
#[derive(Deserialize)]
pub(crate) struct PushQuery {
    /// Where the image goes; without it, the archive's RepoTags on the first registry.
    dest: Option<String>,
    /// Which image of a multi-image archive (its number or tag), as `--image`.
    image: Option<String>,
    /// The id of an event stream the page opened for this push's progress.
    progress: Option<String>,
    /// `/api/check` only: the size of the file the page is about to send.
    size: Option<u64>,
}

/// An error as JSON: `{"error": {"message", "hint"}}`, with the status.
pub(crate) fn error_response(status: StatusCode, message: &str, hint: &str, note: Option<&str>) -> Response {
    let body = serde_json::json!({ "error": { "message": message, "hint": hint } });
    let mut response = (status, axum::Json(body)).into_response();
    response.extensions_mut().insert(LogNote(note.unwrap_or(message).to_owned()));
    response
}

/// `POST /api/check?dest=REF&size=N`: everything `PUT /api/push` checks
/// before reading its body (the destination, the size, the registry and the
/// credentials), answered without a body.
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (query, admitted) = match admit(&state, query, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    if let (Some(max), Some(size)) = (state.config.max_size, query.size)
        && size > max
    {
        return too_large(max);
    }
    let credentials = credentials(admitted.credential.clone());
    if let Err(refusal) = preflight(&state, &admitted, &credentials).await {
        return with_challenge(*refusal, &headers);
    }
    let mut response = axum::Json(serde_json::json!({ "ok": true })).into_response();
    response.extensions_mut().insert(LogNote(format!("user={}", admitted.user)));
    response
}

pub(crate) async fn push(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (query, admitted) = match admit(&state, query, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let credentials = credentials(admitted.credential.clone());
    // Given credentials are checked by the push itself before it reads the
    // body; an anonymous upload is checked here first (see `preflight`).
    if admitted.credential.is_none()
        && let Err(refusal) = preflight(&state, &admitted, &credentials).await
    {
        return with_challenge(*refusal, &headers);
    }
    let destinations = admitted.destinations(query.image);
    let Admitted { user, permit, .. } = admitted;
    let progress = query.progress.filter(|id| valid_id(id)).and_then(|id| state.events.channel(&id));
    let reporter: Arc<dyn Reporter> = match &progress {
        Some(channel) => {
            let channel = Arc::clone(channel);
            Arc::new(JsonReporter::new(PROGRESS_EVERY, move |event| channel.send(event)))
        }
        None => Arc::new(NoReporter),
    };
    let mark = progress.as_ref().map(Channel::push_started);
    let run = PushRun::new(reporter);
    let provision = match HarborProjects::new(
        &state.config.provision,
        &state.config.connection,
        credentials.clone(),
        run.reporter(),
    ) {
        Ok(provision) => provision,
        Err(error) => {
            let message = failure::message(error.as_ref());
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, &message, "see the service's log", None);
        }
    };
    let body_state = Arc::new(BodyState::default());
    let reader = body_reader(body, Arc::clone(&body_state), state.config.max_size, state.config.idle_timeout);
    let request = PushRequest {
        input: ArchiveInput::Stream { reader: Box::new(reader), label: "the upload".into() },
        destinations,
        connection: state.config.connection.clone(),
        credentials,
        options: state.config.options.clone(),
        provision: Some(Arc::new(provision)),
    };
    state.running().push(run.clone());
    // The push owns its upload slot and ends on its own, also when this
    // handler is dropped (the client went away): the guard below then only
    // tells it to stop, and its failed read cleans up as any failure does.
    let task = tokio::spawn({
        let (run, state) = (run.clone(), Arc::clone(&state));
        async move {
            let outcome = push_archive(request, &run).await;
            state.forget(&run);
            drop(permit);
            outcome
        }
    });
    let mut stop_if_dropped = StopIfDropped(Some(run.clone()));
    let outcome = match task.await {
        Ok(outcome) => outcome.map_err(anyhow::Error::from),
        Err(error) => Err(anyhow::anyhow!("the push task failed: {error}")),
    };
    stop_if_dropped.0 = None;
    let received = body_state.received.load(Ordering::Relaxed);
    let shutting_down = *state.shutting_down.borrow();
    let (status, document) = answer(&outcome, &run, &body_state, &state.config, shutting_down);
    if let Some(channel) = &progress {
        channel.end(status);
    }
    drop(mark);
    let response = with_challenge((status, axum::Json(&document)).into_response(), &headers);
    let result = match &outcome {
        Ok(pushed) => pushed.iter().map(|p| format!("{}@{}", p.reference, p.digest)).collect::<Vec<_>>().join(","),
        Err(error) => format!("error: {}", failure::message(error.as_ref())),
    };
    let mut response = response;
    response.extensions_mut().insert(LogNote(format!("user={user} received={received} {result}")));
    response
}

/// Tells a push to stop when dropped while it is set.
struct StopIfDropped(Option<PushRun>);

impl Drop for StopIfDropped {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            run.interrupt();
        }
    }
}

/// A 401 asks curl and other clients for credentials; the page asks in its
/// own fields (a challenge would make the browser pop up its dialog).
fn with_challenge(mut response: Response, headers: &HeaderMap) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED && !headers.contains_key("x-hoist-page") {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hoist serve: the registry's credentials\", charset=\"UTF-8\""),
        );
    }
    response
}

/// The store a push uses: the upload's Basic pair and nothing else (never
/// the service's own logins).
fn credentials(credential: Option<Credential>) -> CredentialStore {
    let store = CredentialStore::anonymous();
    match credential {
        Some(credential) => store.with_explicit_from(credential, "the upload's HTTP basic credentials"),
        None => store,
    }
}

/// What the push itself checks before it reads a byte (see
/// [`check_destinations`]: the registry answers, and takes the credentials),
/// plus this service's own rule: with no credentials, a registry whose
/// `/v2/` wants some is refused here, so an anonymous upload is never read
/// or staged only to fail at the registry.
async fn preflight(state: &AppState, admitted: &Admitted, credentials: &CredentialStore) -> Result<(), Box<Response>> {
    let destinations = admitted.destinations(None);
    let run = PushRun::new(Arc::new(NoReporter));
    let checks = check_destinations(&destinations, &state.config.connection, credentials.clone(), &run)
        .await
        .map_err(|error| Box::new(refusal(&anyhow::Error::from(error))))?;
    let registry = admitted.target.registry();
    if admitted.credential.is_none() && checks.get(registry).is_some_and(|c| c.status() == 401) {
        return Err(Box::new(error_response(
            StatusCode::UNAUTHORIZED,
            &format!("{registry} wants credentials, and the upload came without any"),
            "send the registry's own user name and password with the upload (curl -u USER, or the page's \
             Username and Password)",
            None,
        )));
    }
    Ok(())
}

/// A failure before the push, as the push's own failures are answered.
fn refusal(error: &anyhow::Error) -> Response {
    let status = status_for(error);
    let hint = credentials_hint(error)
        .map(str::to_owned)
        .or_else(|| failure::classify(error).1)
        .unwrap_or_else(|| "see the service's log".to_owned());
    error_response(status, &failure::message(error.as_ref()), &hint, None)
}

/// What a push request was admitted with.
struct Admitted {
    dest: Option<Reference>,
    /// The allowed registry it goes to.
    target: RegistryTarget,
    credential: Option<Credential>,
    /// The user name, for the log.
    user: String,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Admitted {
    /// Where the push goes, as the library takes it.
    fn destinations(&self, image: Option<String>) -> Destinations {
        Destinations { references: self.dest.iter().cloned().collect(), rehome: Some(self.target.clone()), image }
    }
}

/// Checks a push request before a byte of its body is read: the query, the
/// destination against `--registry` (no open relay), the declared size,
/// the credentials' form, and a free upload slot.
fn admit(
    state: &AppState,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(PushQuery, Admitted), Box<Response>> {
    let refuse = |status, message: &str, hint: &str| Box::new(error_response(status, message, hint, None));
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            let message = format!("the query is not understood: {}", rejection.body_text());
            return Err(refuse(StatusCode::BAD_REQUEST, &message, "push to /api/push?dest=HOST/REPOSITORY:TAG"));
        }
    };
    if *state.shutting_down.borrow() {
        return Err(Box::new(busy("the service is shutting down", "push again when it is back")));
    }
    let dest = match query.dest.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(Reference::parse) {
        None => None,
        Some(Ok(dest)) => Some(dest),
        Some(Err(error)) => {
            let hint = "write dest as HOST[:PORT]/PATH/NAME[:TAG], e.g. registry.example.com/team/app:1.0";
            return Err(refuse(StatusCode::BAD_REQUEST, &error.to_string(), hint));
        }
    };
    let target = match &dest {
        None => state.config.registries[0].clone(),
        Some(dest) => match state.config.registries.iter().find(|r| allows(r, dest)) {
            Some(target) => target.clone(),
            None => {
                let allowed: Vec<String> = state.config.registries.iter().map(target_name).collect();
                let message = format!("this service does not push to {}/{}", dest.registry(), dest.repository());
                let hint = format!("push under one of: {}", allowed.join(", "));
                return Err(refuse(StatusCode::FORBIDDEN, &message, &hint));
            }
        },
    };
    if let (Some(max), Some(length)) = (state.config.max_size, content_length(headers))
        && length > max
    {
        return Err(Box::new(too_large(max)));
    }
    let hint = "send the registry's user name and password as HTTP basic authentication";
    let credential = basic_credential(headers).map_err(|message| refuse(StatusCode::BAD_REQUEST, message, hint))?;
    let user = match &credential {
        Some(Credential::Basic { username, .. }) => username.clone(),
        _ => "-".to_owned(),
    };
    let Ok(permit) = Arc::clone(&state.uploads).try_acquire_owned() else {
        let message = format!("{} uploads are already in flight", state.config.max_uploads);
        return Err(Box::new(busy(&message, "push again in a moment")));
    };
    Ok((query, Admitted { dest, target, credential, user, permit }))
}

/// Whether `--registry target` lets `dest` be pushed: the same registry and,
/// when the target names a prefix, a repository under it.
fn allows(target: &RegistryTarget, dest: &Reference) -> bool {
    target.registry() == dest.registry()
        && target
            .prefix()
            .is_none_or(|prefix| dest.repository().strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
}

/// `host` or `host/prefix`, as `--registry` named it.
fn target_name(target: &RegistryTarget) -> String {
    match target.prefix() {
        Some(prefix) => format!("{}/{prefix}/", target.registry()),
        None => target.registry().to_owned(),
    }
}

/// The status and JSON answer for a push's outcome: the document `hoist
/// push --output json` prints.
fn answer(
    outcome: &anyhow::Result<Vec<PushedImage>>,
    run: &PushRun,
    body: &BodyState,
    config: &super::ServeConfig,
    shutting_down: bool,
) -> (StatusCode, serde_json::Value) {
    let error = match outcome {
        Ok(pushed) => return (StatusCode::OK, crate::commands::push::json_document(pushed, None, run)),
        Err(error) => error,
    };
    let mut document = crate::commands::push::json_document(&run.published(), Some(error), run);
    let mut say = |message: String, hint: &str| {
        document["error"] = serde_json::json!({ "message": message, "hint": hint });
    };
    let status = if body.over_limit.load(Ordering::Relaxed) {
        let max = config.max_size.unwrap_or_default();
        say(
            format!("the upload is larger than this service accepts ({max} bytes)"),
            "push a smaller archive, or ask the operator to raise --max-size",
        );
        StatusCode::PAYLOAD_TOO_LARGE
    } else if body.stalled.load(Ordering::Relaxed) {
        say(
            format!("the client sent nothing for {}s, so the upload was given up", config.idle_timeout.as_secs()),
            "check the network between the client and this service; nothing was tagged",
        );
        StatusCode::REQUEST_TIMEOUT
    } else if body.broken.load(Ordering::Relaxed) {
        // Nobody reads this answer; the log says 499, as nginx does.
        say("the client went away before the upload ended".to_owned(), "nothing was tagged");
        StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
    } else if run.is_interrupted() && shutting_down {
        say(
            "the service shut down before this push finished; it was cancelled".to_owned(),
            "push again when the service is back",
        );
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        if let Some(hint) = credentials_hint(error) {
            document["error"]["hint"] = hint.into();
        }
        status_for(error)
    };
    (status, document)
}

/// The CLI's hint for refused credentials names its flags; here they come
/// with the upload.
fn credentials_hint(error: &anyhow::Error) -> Option<&'static str> {
    match refused_credentials(error)? {
        ErrorKind::Unauthorized => Some(
            "the registry wants its own user name and password with the upload (curl -u USER, or the page's \
             Username and Password); these were missing or refused",
        ),
        _ => Some("the registry knows this user but does not let it push there; ask its administrator"),
    }
}

/// What the registry said of the credentials, if that is why the push failed.
fn refused_credentials(error: &anyhow::Error) -> Option<ErrorKind> {
    fn of_push(error: &PushError) -> Option<&RegistryError> {
        match error {
            PushError::Registry(registry) => Some(registry),
            PushError::NotPublished { cause, .. } => of_push(cause),
            _ => None,
        }
    }
    let registry = error.chain().find_map(|cause| {
        cause.downcast_ref::<RegistryError>().or_else(|| cause.downcast_ref::<PushError>().and_then(of_push))
    })?;
    matches!(registry.kind(), ErrorKind::Unauthorized | ErrorKind::Denied).then(|| registry.kind())
}

/// The HTTP status for a failed push: whose fault it is, as the exit code says.
fn status_for(error: &anyhow::Error) -> StatusCode {
    match refused_credentials(error) {
        Some(ErrorKind::Unauthorized) => return StatusCode::UNAUTHORIZED,
        Some(_) => return StatusCode::FORBIDDEN,
        None => {}
    }
    match failure::classify(error).0 {
        Exit::Usage | Exit::BadArchive | Exit::Mismatch => StatusCode::BAD_REQUEST,
        Exit::Auth => StatusCode::FORBIDDEN,
        Exit::NotFound => StatusCode::NOT_FOUND,
        Exit::Unavailable if registry_timed_out(error) => StatusCode::GATEWAY_TIMEOUT,
        Exit::Unavailable | Exit::Rejected | Exit::Protocol => StatusCode::BAD_GATEWAY,
        Exit::Local | Exit::Bug | Exit::Interrupted | Exit::Terminated => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether the registry stopped answering (the stall watchdog or a
/// connection timeout), rather than failing outright.
fn registry_timed_out(error: &anyhow::Error) -> bool {
    let message = failure::message(error.as_ref());
    message.contains("no progress for") || message.contains("timed out")
}

fn busy(message: &str, hint: &str) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message, hint, None);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn too_large(max: u64) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the upload is larger than this service accepts ({max} bytes)"),
        "push a smaller archive, or ask the operator to raise --max-size",
        None,
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The uploader's HTTP basic credentials, passed to the registry for this
/// push only. Never logged: only the user name reaches the access log, so
/// a name with control characters (a forged log line) is refused.
fn basic_credential(headers: &HeaderMap) -> Result<Option<Credential>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| "the Authorization header is not text")?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err("only HTTP basic authentication is understood");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("only HTTP basic authentication is understood");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the basic credentials are not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "the basic credentials are not UTF-8")?;
    let (username, password) = text.split_once(':').ok_or("the basic credentials have no `:`")?;
    if username.chars().any(char::is_control) {
        return Err("the user name holds control characters");
    }
    if username.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic { username: username.to_owned(), password: Secret::new(password.to_owned()) }))
}

/// What the body reader saw, for the answer.
#[derive(Default)]
struct BodyState {
    received: AtomicU64,
    over_limit: AtomicBool,
    stalled: AtomicBool,
    /// The client went away mid-body.
    broken: AtomicBool,
}

/// The request body as a blocking reader for the archive reader's thread:
/// at most `max` bytes, and failing when the client sends nothing for `idle`.
fn body_reader(body: Body, state: Arc<BodyState>, max: Option<u64>, idle: Duration) -> impl io::Read + Send {
    let chunks = futures_util::stream::unfold(
        (body.into_data_stream(), state, false),
        move |(mut data, state, failed)| async move {
            if failed {
                return None;
            }
            let fail = |error: io::Error, data, state| Some((Err(error), (data, state, true)));
            match tokio::time::timeout(idle, data.next()).await {
                Err(_) => {
                    state.stalled.store(true, Ordering::Relaxed);
                    let error = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client sent nothing for {}s", idle.as_secs()),
                    );
                    fail(error, data, state)
                }
                Ok(None) => None,
                Ok(Some(Err(error))) => {
                    state.broken.store(true, Ordering::Relaxed);
                    fail(io::Error::other(format!("the upload broke off: {error}")), data, state)
                }
                Ok(Some(Ok(bytes))) => {
                    let total = state.received.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
                    if max.is_some_and(|max| total > max) {
                        state.over_limit.store(true, Ordering::Relaxed);
                        fail(io::Error::other("the upload is larger than --max-size"), data, state)
                    } else {
                        Some((Ok(bytes), (data, state, false)))
                    }
                }
            }
        },
    );
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(chunks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_in_registry_bounds_the_destinations() {
        let target = RegistryTarget::parse("registry.example.com/mirror").unwrap();
        let dest = |text: &str| Reference::parse(text).unwrap();
        assert!(allows(&target, &dest("registry.example.com/mirror/app:1")));
        assert!(allows(&target, &dest("registry.example.com/mirror/team/app:1")));
        assert!(!allows(&target, &dest("registry.example.com/other/app:1")));
        assert!(!allows(&target, &dest("registry.example.com/mirrored/app:1")), "a prefix is a whole path part");
        assert!(!allows(&target, &dest("other.example.com/mirror/app:1")));
        let whole = RegistryTarget::parse("registry.example.com").unwrap();
        assert!(allows(&whole, &dest("registry.example.com/anything/app:1")));
    }

    #[test]
    fn a_user_name_cannot_forge_a_log_line() {
        let mut headers = HeaderMap::new();
        let forged = base64::engine::general_purpose::STANDARD.encode("alice\n127.0.0.1 GET /forged:pw");
        headers.insert(header::AUTHORIZATION, format!("Basic {forged}").parse().unwrap());
        assert!(basic_credential(&headers).is_err());
    }
}
