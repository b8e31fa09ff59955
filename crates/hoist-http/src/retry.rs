//! Retrying requests a server (or a proxy in front of it) failed for a
//! passing reason.
//!
//! Every request goes through [`with_retries`], which calls one `send_once`
//! per attempt. Retried: 408, 429, 500, 502, 503, 504, and requests whose
//! connection broke (resets, timeouts); not a connection that could not be
//! made (refused, no such host), which trying again rarely mends. Never
//! retried: any other status, and an answer whose error body the API's
//! error type says forbids it ([`RetryError::forbids_retry`]: a registry's
//! DENIED, UNAUTHORIZED or quota), whatever its status. Delays grow
//! exponentially with jitter (the `backon` crate), capped; a `Retry-After`
//! header (seconds or an HTTP date) replaces the computed delay.
//!
//! Only requests whose body can be replayed are retried here (reqwest clones
//! bodies held in memory, not streams). Uploads of streamed bodies recover a
//! level up, in the registry client, by reopening their source.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::StatusCode;

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// The first delay; each later one doubles, plus up to the same again as jitter.
    pub min_delay: Duration,
    /// Delays stop growing here (jitter may add up to as much again).
    pub max_delay: Duration,
    /// A registry's `Retry-After` is obeyed up to this long.
    pub max_retry_after: Duration,
    /// One request (or one upload's recoveries) is retried for at most this
    /// long from its first attempt, delays included: no registry can keep
    /// hoist waiting longer, whatever it answers.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self { max_retries: 0, max_elapsed: Duration::ZERO, ..Self::default() }
    }

    /// The delays to wait before each retry, in order.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build()
    }
}

/// The retries left to one request or upload: the policy's delays, while
/// its time budget lasts.
pub struct Budget {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    deadline: Instant,
    max_retry_after: Duration,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl Budget {
    pub fn new(policy: &RetryPolicy) -> Self {
        Self {
            delays: Box::new(policy.delays()),
            deadline: Instant::now() + policy.max_elapsed,
            max_retry_after: policy.max_retry_after,
        }
    }

    /// The delay before the next attempt (`asked`: the registry's
    /// `Retry-After`), or why there is none.
    pub fn next(&mut self, asked: Option<Duration>) -> Result<Duration, Exhausted> {
        let computed = self.delays.next().ok_or(Exhausted::Attempts)?;
        if let Some(asked) = asked
            && asked > self.max_retry_after
        {
            return Err(Exhausted::TooLong(asked));
        }
        let delay = asked.unwrap_or(computed);
        if Instant::now() + delay >= self.deadline {
            return Err(match asked {
                Some(asked) => Exhausted::TooLong(asked),
                None => Exhausted::Time,
            });
        }
        Ok(delay)
    }
}

/// Why a [`Budget`] allows no further attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    Attempts,
    Time,
    /// The registry asked to wait longer than hoist waits.
    TooLong(Duration),
}

impl Exhausted {
    /// A note for the final error, if the reason is worth telling.
    pub fn note(self) -> Option<String> {
        match self {
            Self::Attempts | Self::Time => None,
            Self::TooLong(wait) => Some(format!("the registry asked to wait {} s before trying again", wait.as_secs())),
        }
    }
}

/// A request (or an upload step) is about to be tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryEvent {
    /// What was being done, as in error messages ("upload blob … to app").
    pub action: String,
    /// The attempt that failed, counting from 1.
    pub attempt: u32,
    /// How long hoist waits before the next attempt.
    pub delay: Duration,
    /// Why, without URLs: "HTTP 503", "connection reset by peer", …
    pub reason: String,
}

/// Receives every [`RetryEvent`]; set in [`crate::TransportOptions::on_retry`].
/// Called from any task; must not block.
#[derive(Clone)]
pub struct RetryObserver(Arc<dyn Fn(&RetryEvent) + Send + Sync>);

impl RetryObserver {
    pub fn new(observer: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(observer))
    }

    pub fn notify(&self, event: &RetryEvent) {
        (self.0)(event);
    }
}

impl fmt::Debug for RetryObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryObserver")
    }
}

/// Where retries are reported and counted.
#[derive(Clone, Debug)]
pub struct RetryContext<'a> {
    pub policy: RetryPolicy,
    pub observer: Option<&'a RetryObserver>,
    /// Incremented once per retry, for callers that report totals.
    pub counter: Option<&'a AtomicU32>,
}

impl RetryContext<'_> {
    /// Logs, counts and reports a retry, then waits `delay`.
    pub async fn pause(&self, action: &str, attempt: u32, delay: Duration, reason: String) {
        tracing::debug!(attempt, delay_ms = delay.as_millis(), %reason, "retrying: {action}");
        if let Some(counter) = self.counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(observer) = self.observer {
            observer.notify(&RetryEvent { action: action.to_owned(), attempt, delay, reason });
        }
        tokio::time::sleep(delay).await;
    }
}

/// What [`with_retries`] needs of an API's error type.
pub trait RetryError: Sized {
    /// Whether the failure may pass: a connection that broke or stalled.
    fn is_retryable(&self) -> bool;
    /// Why, for a [`RetryEvent`], without URLs ("connection reset by peer").
    fn reason(&self) -> String;
    /// The error for an answer with this status and (start of its) body.
    fn from_answer(action: &str, url: &url::Url, status: u16, body: &[u8]) -> Self;
    /// The same error, `note` added to what it says.
    #[must_use]
    fn with_note(self, note: String) -> Self;
    /// An error body that says trying again cannot help, whatever the status.
    fn forbids_retry(body: &[u8]) -> bool;
}

/// Sends `request` with `send_once`, again after a delay while the outcome
/// is retryable, the policy's attempts and time allow, and the body can be
/// replayed.
pub async fn with_retries<E, F, Fut>(
    context: RetryContext<'_>,
    action: &str,
    url: &url::Url,
    request: reqwest::RequestBuilder,
    mut send_once: F,
) -> Result<reqwest::Response, E>
where
    E: RetryError,
    F: FnMut(reqwest::RequestBuilder) -> Fut,
    Fut: Future<Output = Result<reqwest::Response, E>>,
{
    let mut budget = Budget::new(&context.policy);
    let mut pending = request;
    let mut attempt = 1;
    loop {
        let spare = pending.try_clone();
        let result = send_once(pending).await;
        let (reason, asked) = match &result {
            Ok(response) if is_retryable_status(response.status()) => {
                (format!("HTTP {}", response.status().as_u16()), retry_after(response))
            }
            Err(error) if error.is_retryable() => (error.reason(), None),
            _ => return result,
        };
        // A stream body cannot be sent twice: the caller must rebuild it.
        let Some(next) = spare else { return result };
        let delay = match budget.next(asked) {
            Ok(delay) => delay,
            Err(exhausted) => return with_note(result, exhausted, action, url).await,
        };
        if let Ok(response) = result
            && let Err(final_answer) = refuses_retry::<E>(response).await
        {
            return Ok(final_answer);
        }
        context.pause(action, attempt, delay, reason).await;
        attempt += 1;
        pending = next;
    }
}

/// The last outcome, with why it was not retried when that helps the user:
/// a `Retry-After` too long to honour is said in the error.
async fn with_note<E: RetryError>(
    result: Result<reqwest::Response, E>,
    exhausted: Exhausted,
    action: &str,
    url: &url::Url,
) -> Result<reqwest::Response, E> {
    match (exhausted.note(), result) {
        (Some(note), Ok(response)) => {
            let status = response.status().as_u16();
            let body = crate::wire::error_body(response).await;
            Err(E::from_answer(action, url, status, &body).with_note(note))
        }
        (_, result) => result,
    }
}

/// The statuses that mean "not now" rather than "no".
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as a delay: delta-seconds, or an HTTP date (a date in the
/// past means now).
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads the body of a retryable answer. `Err` hands back an equivalent
/// response when the body forbids a retry (see [`RetryError::forbids_retry`]),
/// so that the caller reports it as usual.
async fn refuses_retry<E: RetryError>(response: reqwest::Response) -> Result<(), reqwest::Response> {
    let status = response.status();
    let headers = response.headers().clone();
    // Only the start of the body is read, within a few seconds: a server
    // cannot hold hoist here with an endless or trickling body.
    let body = crate::wire::error_body(response).await;
    if !E::forbids_retry(&body) {
        return Ok(());
    }
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    Err(reqwest::Response::from(rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_passing_failures_are_retryable() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 416, 501, 505] {
            assert!(!is_retryable_status(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn delays_are_capped_and_counted() {
        let policy = RetryPolicy {
            max_retries: 8,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 8);
        // Jitter adds up to the delay again on top of the capped delay.
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)), "{delays:?}");
        assert!(delays[0] >= Duration::from_millis(100), "{delays:?}");
    }
}
