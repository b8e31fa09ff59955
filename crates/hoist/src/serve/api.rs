//! `PUT /api/push?dest=REF` (or `POST`): the request body is the archive,
//! read while it arrives and pushed by the same library call as
//! `hoist push -`.

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
use hoist_transfer::{Destinations, NoReporter, PushError, PushRequest, PushRun, PushedImage, Reporter, push_archive};
use serde::Deserialize;

use super::events::{message, valid_id};
use super::{AppState, LogNote};
use crate::failure::{self, Exit};
use crate::harbor::HarborProjects;
use crate::reporter::JsonReporter;

/// Progress events go to the page at most this often per layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
pub(crate) struct PushQuery {
    /// Where the image goes; without it, the archive's RepoTags on the first registry.
    dest: Option<String>,
    /// Which image of a multi-image archive (its number or tag), as `--image`.
    image: Option<String>,
    /// The id of an event stream the page opened for this push's progress.
    progress: Option<String>,
}

/// An error as JSON: `{"error": {"message", "hint"}}`, with the status.
pub(crate) fn error_response(status: StatusCode, message: &str, hint: &str, note: Option<&str>) -> Response {
    let body = serde_json::json!({ "error": { "message": message, "hint": hint } });
    let mut response = (status, axum::Json(body)).into_response();
    response.extensions_mut().insert(LogNote(note.unwrap_or(message).to_owned()));
    response
}

pub(crate) async fn push(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (query, Admitted { dest, target, credential, user, permit }) = match admit(&state, query, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let progress = query.progress.filter(|id| valid_id(id)).and_then(|id| state.events.channel(&id));
    let reporter: Arc<dyn Reporter> = match &progress {
        Some(sender) => {
            let sender = Arc::clone(sender);
            Arc::new(JsonReporter::new(PROGRESS_EVERY, move |event| {
                let _ = sender.send(message(event));
            }))
        }
        None => Arc::new(NoReporter),
    };
    let run = PushRun::new(reporter);
    let body_state = Arc::new(BodyState::default());
    let reader = body_reader(body, Arc::clone(&body_state), state.config.max_size, state.config.idle_timeout);
    let mut credentials = CredentialStore::anonymous();
    if let Some(credential) = credential {
        credentials = credentials.with_explicit_from(credential, "the upload's HTTP basic credentials");
    }
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
    let request = PushRequest {
        input: ArchiveInput::Stream { reader: Box::new(reader), label: "the upload".into() },
        destinations: Destinations { references: dest.into_iter().collect(), rehome: Some(target), image: query.image },
        connection: state.config.connection.clone(),
        credentials,
        options: state.config.options.clone(),
        provision: Some(Arc::new(provision)),
    };
    state.running().push(run.clone());
    let task = tokio::spawn({
        let run = run.clone();
        async move { push_archive(request, &run).await }
    });
    let mut in_flight = InFlight { state: Arc::clone(&state), run: run.clone(), abort: Some(task.abort_handle()) };
    let outcome = match task.await {
        Ok(outcome) => outcome.map_err(anyhow::Error::from),
        Err(error) => Err(anyhow::anyhow!("the push task failed: {error}")),
    };
    in_flight.finished();
    drop(permit);
    let received = body_state.received.load(Ordering::Relaxed);
    let (status, document) = answer(&outcome, &run, &body_state, state.config.max_size, state.config.idle_timeout);
    if let Some(sender) = progress {
        let end = format!("data: {{\"event\":\"end\",\"status\":{}}}\n\n", status.as_u16());
        let _ = sender.send(bytes::Bytes::from(end));
    }
    let mut response = (status, axum::Json(&document)).into_response();
    if status == StatusCode::UNAUTHORIZED && !headers.contains_key("x-hoist-page") {
        // curl -u and other clients ask for credentials on this; the page asks in its own fields.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hoist serve: the registry's credentials\", charset=\"UTF-8\""),
        );
    }
    let result = match &outcome {
        Ok(pushed) => pushed.iter().map(|p| format!("{}@{}", p.reference, p.digest)).collect::<Vec<_>>().join(","),
        Err(error) => format!("error: {}", failure::message(error.as_ref())),
    };
    response.extensions_mut().insert(LogNote(format!("user={user} received={received} {result}")));
    response
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

/// Checks a push request before a byte of its body is read: the query, the
/// destination against `--registry` (no open relay), the declared size,
/// the credentials' form, and a free upload slot.
fn admit(
    state: &AppState,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(PushQuery, Admitted), Box<Response>> {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                &format!("the query is not understood: {}", rejection.body_text()),
                "push to /api/push?dest=HOST/REPOSITORY:TAG",
                None,
            )));
        }
    };
    if *state.shutting_down.borrow() {
        return Err(Box::new(busy("the service is shutting down", "push again when it is back")));
    }
    let dest = match query.dest.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(Reference::parse) {
        None => None,
        Some(Ok(dest)) => Some(dest),
        Some(Err(error)) => {
            return Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                &error.to_string(),
                "write dest as HOST[:PORT]/PATH/NAME[:TAG], e.g. registry.example.com/team/app:1.0",
                None,
            )));
        }
    };
    let target = match &dest {
        None => state.config.registries[0].clone(),
        Some(dest) => match state.config.registries.iter().find(|r| r.registry() == dest.registry()) {
            Some(target) => target.clone(),
            None => {
                let allowed: Vec<&str> = state.config.registries.iter().map(RegistryTarget::registry).collect();
                return Err(Box::new(error_response(
                    StatusCode::FORBIDDEN,
                    &format!("this service does not push to {}", dest.registry()),
                    &format!("push to one of: {}", allowed.join(", ")),
                    None,
                )));
            }
        },
    };
    if let (Some(max), Some(length)) = (state.config.max_size, content_length(headers))
        && length > max
    {
        return Err(Box::new(too_large(max)));
    }
    let credential = basic_credential(headers).map_err(|message| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            message,
            "send the registry's user name and password as HTTP basic authentication",
            None,
        ))
    })?;
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

/// The status and JSON answer for a push's outcome: the document `hoist
/// push --output json` prints.
fn answer(
    outcome: &anyhow::Result<Vec<PushedImage>>,
    run: &PushRun,
    body: &BodyState,
    max_size: Option<u64>,
    idle: Duration,
) -> (StatusCode, serde_json::Value) {
    match outcome {
        Ok(pushed) => (StatusCode::OK, crate::commands::push::json_document(pushed, None, run)),
        Err(error) => {
            let mut document = crate::commands::push::json_document(&run.published(), Some(error), run);
            let status = if body.over_limit.load(Ordering::Relaxed) {
                let max = max_size.unwrap_or_default();
                document["error"] = serde_json::json!({
                    "message": format!("the upload is larger than this service accepts ({max} bytes)"),
                    "hint": "push a smaller archive, or ask the operator to raise --max-size",
                });
                StatusCode::PAYLOAD_TOO_LARGE
            } else if body.stalled.load(Ordering::Relaxed) {
                document["error"] = serde_json::json!({
                    "message": format!("the client sent nothing for {}s, so the upload was given up", idle.as_secs()),
                    "hint": "check the network between the client and this service; nothing was tagged",
                });
                StatusCode::REQUEST_TIMEOUT
            } else {
                status_for(error)
            };
            // The CLI's hint names its flags; here the credentials come with the upload.
            match refused_credentials(error) {
                Some(ErrorKind::Unauthorized) => {
                    document["error"]["hint"] = "the registry wants its own user name and password with the upload \
                        (curl -u USER, or the page's Username and Password); these were missing or refused"
                        .into();
                }
                Some(_) => {
                    document["error"]["hint"] =
                        "the registry knows this user but does not let it push there; ask its administrator".into();
                }
                None => {}
            }
            (status, document)
        }
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
/// push only. Never logged: only the user name reaches the access log.
fn basic_credential(headers: &HeaderMap) -> Result<Option<Credential>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| "the Authorization header is not text")?;
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Err("only HTTP basic authentication is understood");
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the basic credentials are not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "the basic credentials are not UTF-8")?;
    let (username, password) = text.split_once(':').ok_or("the basic credentials have no `:`")?;
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
                Ok(Some(Err(error))) => fail(io::Error::other(format!("the upload broke off: {error}")), data, state),
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

/// A push in flight. If the handler is dropped first (the client went
/// away), the push is stopped and its upload sessions cancelled, as
/// Ctrl-C does for `hoist push`.
struct InFlight {
    state: Arc<AppState>,
    run: PushRun,
    abort: Option<tokio::task::AbortHandle>,
}

impl InFlight {
    fn finished(&mut self) {
        self.abort = None;
        self.forget();
    }

    fn forget(&self) {
        let mut running = self.state.running();
        if let Some(index) = running.iter().position(|r| r.same_as(&self.run)) {
            running.swap_remove(index);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(abort) = self.abort.take() else { return };
        self.forget();
        self.run.interrupt();
        abort.abort();
        let run = self.run.clone();
        tokio::spawn(async move { run.clean_up().await });
    }
}
