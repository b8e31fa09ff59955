//! Each push's progress as server-sent events: the page opens
//! `GET /api/events?id=ID` with an id it made up, then pushes with
//! `progress=ID`; the push's reporter sends its JSON events (those of
//! `--progress json`) to every page listening on that id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::AppState;
use super::api::error_response;

/// At most this many progress ids at once: ids are the page's, so a client
/// could otherwise make the map grow without end.
const MAX_CHANNELS: usize = 256;
/// Events a slow page may fall behind by before it misses some.
const BACKLOG: usize = 256;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Sender = Arc<broadcast::Sender<Bytes>>;

/// The progress channels by id. The map holds them weakly: a channel lives
/// while a page listens or a push reports to it, and no longer.
#[derive(Default)]
pub(crate) struct Channels(Mutex<HashMap<String, Weak<broadcast::Sender<Bytes>>>>);

impl Channels {
    /// The channel for `id`, made if new; `None` when there are too many.
    pub(crate) fn channel(&self, id: &str) -> Option<Sender> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = map.get(id).and_then(Weak::upgrade) {
            return Some(sender);
        }
        map.retain(|_, sender| sender.strong_count() > 0);
        if map.len() >= MAX_CHANNELS {
            return None;
        }
        let sender = Arc::new(broadcast::channel(BACKLOG).0);
        map.insert(id.to_owned(), Arc::downgrade(&sender));
        Some(sender)
    }
}

/// How the last message of a push starts.
const END_PREFIX: &[u8] = b"data: {\"event\":\"end\"";

/// An event as one server-sent-events message.
pub(crate) fn message(event: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {event}\n\n"))
}

/// A progress id: what the page makes with `crypto.randomUUID()`.
pub(crate) fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    id: String,
}

/// `GET /api/events?id=ID`: the push's events as they happen. The stream
/// ends when the push has ended and said so, or when the service stops
/// while no push holds it.
pub(crate) async fn stream(State(state): State<Arc<AppState>>, Query(query): Query<EventsQuery>) -> Response {
    if !valid_id(&query.id) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the progress id is not valid",
            "use 8 to 64 letters, digits or dashes",
            None,
        );
    }
    let Some(sender) = state.events.channel(&query.id) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many progress streams are open",
            "try again in a moment",
            None,
        );
    };
    let receiver = sender.subscribe();
    // The stream holds its channel; it is busy while a push holds it too.
    let guard = sender;
    let shutting_down = state.shutting_down.clone();
    let events = futures_util::stream::unfold(
        (receiver, guard, shutting_down, false),
        |(mut receiver, guard, mut shutting_down, done)| async move {
            if done {
                return None;
            }
            loop {
                let next = tokio::select! {
                    message = receiver.recv() => Next::Received(message),
                    () = tokio::time::sleep(KEEP_ALIVE) => Next::Quiet,
                    _ = shutting_down.wait_for(|stopping| *stopping), if Arc::strong_count(&guard) < 2 => Next::Stop,
                };
                match next {
                    Next::Quiet => {
                        let comment = Bytes::from_static(b": keep-alive\n\n");
                        return Some((
                            Ok::<_, std::convert::Infallible>(comment),
                            (receiver, guard, shutting_down, false),
                        ));
                    }
                    Next::Received(Ok(bytes)) => {
                        let last = bytes.starts_with(END_PREFIX);
                        return Some((Ok(bytes), (receiver, guard, shutting_down, last)));
                    }
                    // A page that fell behind misses some progress, not the end.
                    Next::Received(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    Next::Received(Err(broadcast::error::RecvError::Closed)) | Next::Stop => return None,
                }
            }
        },
    );
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// What woke an event stream.
enum Next {
    Received(Result<Bytes, broadcast::error::RecvError>),
    /// Nothing for a while: time for a keep-alive comment.
    Quiet,
    /// The service is stopping and no push holds the stream.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_lives_only_while_a_page_or_a_push_holds_it() {
        let channels = Channels::default();
        let held: Vec<Sender> = (0..MAX_CHANNELS).map(|i| channels.channel(&format!("id-{i:04}")).unwrap()).collect();
        assert!(channels.channel("one-too-many").is_none(), "at most {MAX_CHANNELS} at once");
        let again = channels.channel("id-0000").unwrap();
        assert!(Arc::ptr_eq(&again, &held[0]), "the same id is the same channel");
        drop(held);
        drop(again);
        assert!(channels.channel("a-fresh-id").is_some(), "channels nobody holds are forgotten");
        assert_eq!(channels.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn progress_ids_are_what_the_page_makes() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("short"));
        assert!(!valid_id("../../etc/passwd-and-more"));
        assert!(!valid_id(&"a".repeat(65)));
    }
}
