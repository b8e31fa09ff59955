//! Bounds on every exchange with a server: how long a request may go
//! without progress, and how much of an answer is ever read.
//!
//! A registry, Harbor's API or anything posing as one can accept a
//! connection and never answer, stop reading a request body, trickle an
//! answer one byte at a time, or send an endless one. So:
//!
//! - every request runs under a watchdog ([`send`]): it fails once neither
//!   a byte of its body was taken nor its answer arrived for the client's
//!   timeout. reqwest's own `read_timeout` cannot do this: it runs from the
//!   start of the request to the answer's headers, so it would cut off an
//!   upload that is simply large;
//! - every body is read chunk by chunk, each chunk within the same timeout
//!   ([`next_chunk`]), up to a cap ([`read_capped`]); an error answer keeps
//!   its first [`ERROR_BODY_KEPT`] bytes, read within [`ERROR_BODY_TIME`]
//!   ([`error_body`]), and the rest goes with the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use url::Url;

use crate::{HttpError, HttpErrorKind};

/// What an error answer's body is read for: its JSON error codes and a line
/// of text. Registries send a few hundred bytes.
pub const ERROR_BODY_KEPT: usize = 16 * 1024;
/// An error body is read for at most this long in all.
pub const ERROR_BODY_TIME: Duration = Duration::from_secs(5);

/// When a request last made progress: a chunk of its body taken by the
/// connection, or its answer arriving. Shared with the body's stream.
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last progress.
    last: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Self { start: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    /// Records progress now.
    pub fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Why [`send`] got no answer.
#[derive(Debug)]
pub enum SendError {
    Transport(reqwest::Error),
    /// No progress for this long.
    Stalled(Duration),
}

impl SendError {
    pub fn into_error(self, action: &str, url: &Url) -> HttpError {
        match self {
            Self::Transport(error) => HttpError::from_transport(action, url, &error),
            Self::Stalled(limit) => stalled(action, url, limit),
        }
    }
}

/// The error for a request or answer that made no progress for `limit`.
pub fn stalled(action: &str, url: &Url, limit: Duration) -> HttpError {
    HttpError::new(HttpErrorKind::Network, action)
        .with_url(url)
        .with_detail(format!("no progress for {} s", limit.as_secs()))
        .with_hint(format!(
            "the registry stopped answering; if it is only slow (a large commit, a slow link), raise `--timeout` \
             above {} seconds",
            limit.as_secs()
        ))
}

/// Sends `request`; fails once `activity` shows no progress for `limit`.
pub async fn send(
    request: reqwest::RequestBuilder,
    activity: &Activity,
    limit: Duration,
) -> Result<reqwest::Response, SendError> {
    activity.touch();
    let answer = request.send();
    tokio::pin!(answer);
    loop {
        let left = limit.saturating_sub(activity.idle());
        if left.is_zero() {
            return Err(SendError::Stalled(limit));
        }
        tokio::select! {
            result = &mut answer => {
                activity.touch();
                return result.map_err(SendError::Transport);
            }
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// The next chunk of a body, which must arrive within `limit`.
pub async fn next_chunk<S>(body: &mut S, action: &str, url: &Url, limit: Duration) -> Result<Option<Bytes>, HttpError>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    match tokio::time::timeout(limit, body.next()).await {
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(error))) => Err(HttpError::from_transport(action, url, &error)),
        Ok(None) => Ok(None),
        Err(_) => Err(stalled(action, url, limit)),
    }
}

/// Reads a body of at most `max` bytes, stopping as soon as it is larger:
/// a registry cannot make hoist buffer more, or wait longer than `limit`
/// for any chunk.
pub async fn read_capped(
    action: &str,
    url: &Url,
    response: reqwest::Response,
    max: usize,
    limit: Duration,
) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(HttpErrorKind::Protocol, action)
            .with_url(url)
            .with_detail(format!("the answer is larger than {max} bytes"))
    };
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let mut body = response.bytes_stream();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = next_chunk(&mut body, action, url, limit).await? {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// The first [`ERROR_BODY_KEPT`] bytes of an error answer, whatever arrives
/// within [`ERROR_BODY_TIME`]: enough for its message, however long or slow
/// the body is. A broken body just gives what came before.
pub async fn error_body(response: reqwest::Response) -> Bytes {
    let mut body = response.bytes_stream();
    let mut kept = BytesMut::new();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            let room = ERROR_BODY_KEPT - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if kept.len() == ERROR_BODY_KEPT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIME, read).await;
    kept.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_counts_idle_time_from_the_last_touch() {
        let activity = Activity::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(activity.idle() >= Duration::from_millis(30));
        activity.touch();
        assert!(activity.idle() < Duration::from_millis(30));
    }
}
