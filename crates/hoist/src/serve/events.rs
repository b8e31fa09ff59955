//! Each push's progress as server-sent events: the page opens
//! `GET /api/events?id=ID` with an id it made up, then pushes with
//! `progress=ID`; the push's reporter sends its JSON events (those of
//! `--progress json`) to every page listening on that id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// At most this many pages listening on one id.
const MAX_LISTENERS: usize = 4;
/// Events a slow page may fall behind by before it misses some.
const BACKLOG: usize = 256;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How the last message of a push starts.
const END_PREFIX: &[u8] = b"data: {\"event\":\"end\"";

/// One id's events, and how many pushes report to it.
#[derive(Debug)]
pub(crate) struct Channel {
    sender: broadcast::Sender<Bytes>,
    pushes: AtomicUsize,
}

impl Channel {
    /// Sends `event` to every page listening (none listening is fine).
    pub(crate) fn send(&self, event: &serde_json::Value) {
        let _ = self.sender.send(Bytes::from(format!("data: {event}\n\n")));
    }

    /// Says the push ended, with its HTTP status: the page's stream ends here.
    pub(crate) fn end(&self, status: StatusCode) {
        let _ =
            self.sender.send(Bytes::from(format!("data: {{\"event\":\"end\",\"status\":{}}}\n\n", status.as_u16())));
    }

    /// Marks a push reporting here until the mark is dropped.
    pub(crate) fn push_started(self: &Arc<Self>) -> PushMark {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        PushMark(Arc::clone(self))
    }
}

/// A push reporting to a channel; see [`Channel::push_started`].
#[derive(Debug)]
pub(crate) struct PushMark(Arc<Channel>);

impl Drop for PushMark {
    fn drop(&mut self) {
        self.0.pushes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The progress channels by id. The map holds them weakly: a channel lives
/// while a page listens or a push reports to it, and no longer.
#[derive(Default)]
pub(crate) struct Channels(Mutex<HashMap<String, Weak<Channel>>>);

impl Channels {
    /// The channel for `id`, made if new; `None` when there are too many.
    pub(crate) fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = map.get(id).and_then(Weak::upgrade) {
            return Some(channel);
        }
        map.retain(|_, channel| channel.strong_count() > 0);
        if map.len() >= MAX_CHANNELS {
            return None;
        }
        let channel = Arc::new(Channel { sender: broadcast::channel(BACKLOG).0, pushes: AtomicUsize::new(0) });
        map.insert(id.to_owned(), Arc::downgrade(&channel));
        Some(channel)
    }
}

/// A progress id: what the page makes (32 hex digits).
pub(crate) fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    id: String,
}

/// What woke an event stream.
enum Next {
    Received(Result<Bytes, broadcast::error::RecvError>),
    /// Nothing for a while: time for a keep-alive comment.
    Quiet,
    /// The service is stopping and no push reports here.
    Stop,
}

/// `GET /api/events?id=ID`: the push's events as they happen. The stream
/// ends after the push's `end` event, or when the service stops while no
/// push reports to it.
pub(crate) async fn stream(State(state): State<Arc<AppState>>, Query(query): Query<EventsQuery>) -> Response {
    if !valid_id(&query.id) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the progress id is not valid",
            "use 8 to 64 letters, digits or dashes",
            None,
        );
    }
    let Some(channel) = state.events.channel(&query.id).filter(|c| c.sender.receiver_count() < MAX_LISTENERS) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many progress streams are open",
            "try again in a moment",
            None,
        );
    };
    let receiver = channel.sender.subscribe();
    let shutting_down = state.shutting_down.clone();
    // The stream holds its channel, so the channel lives while a page listens.
    let events = futures_util::stream::unfold(
        (receiver, channel, shutting_down, false),
        |(mut receiver, channel, mut shutting_down, done)| async move {
            if done {
                return None;
            }
            loop {
                let idle = channel.pushes.load(Ordering::Relaxed) == 0;
                let next = tokio::select! {
                    message = receiver.recv() => Next::Received(message),
                    () = tokio::time::sleep(KEEP_ALIVE) => Next::Quiet,
                    _ = shutting_down.wait_for(|stopping| *stopping), if idle => Next::Stop,
                };
                match next {
                    Next::Quiet => {
                        let comment = Bytes::from_static(b": keep-alive\n\n");
                        let state = (receiver, channel, shutting_down, false);
                        return Some((Ok::<_, std::convert::Infallible>(comment), state));
                    }
                    Next::Received(Ok(bytes)) => {
                        let last = bytes.starts_with(END_PREFIX);
                        return Some((Ok(bytes), (receiver, channel, shutting_down, last)));
                    }
                    // A page that fell behind misses some progress, not the end.
                    Next::Received(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    // (Closed cannot happen while this stream holds the channel.)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_lives_only_while_a_page_or_a_push_holds_it() {
        let channels = Channels::default();
        let held: Vec<_> = (0..MAX_CHANNELS).map(|i| channels.channel(&format!("id-{i:04}")).unwrap()).collect();
        assert!(channels.channel("one-too-many").is_none(), "at most {MAX_CHANNELS} at once");
        let again = channels.channel("id-0000").unwrap();
        assert!(Arc::ptr_eq(&again, &held[0]), "the same id is the same channel");
        drop(held);
        drop(again);
        assert!(channels.channel("a-fresh-id").is_some(), "channels nobody holds are forgotten");
        assert_eq!(channels.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_push_mark_counts_while_it_lives() {
        let channel = Channels::default().channel("some-id-1").unwrap();
        let mark = channel.push_started();
        assert_eq!(channel.pushes.load(Ordering::Relaxed), 1);
        drop(mark);
        assert_eq!(channel.pushes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn progress_ids_are_what_the_page_makes() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("short"));
        assert!(!valid_id("../../etc/passwd-and-more"));
        assert!(!valid_id(&"a".repeat(65)));
    }
}
