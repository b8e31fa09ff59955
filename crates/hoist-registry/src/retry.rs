//! Retries, as `hoist_http::retry` does them, for registry requests: what
//! the registry's errors say about trying again.
//!
//! Every request goes through [`with_retries`] (see `hoist_http::retry` for
//! what is retried and how long). A registry's error body that says DENIED,
//! UNAUTHORIZED or names a quota forbids a retry, whatever its status.

use std::future::Future;

use hoist_http::retry::RetryError;
pub(crate) use hoist_http::retry::{Budget, RetryContext, is_retryable_status};
pub use hoist_http::retry::{RetryEvent, RetryObserver, RetryPolicy};

use crate::RegistryError;

impl RetryError for RegistryError {
    fn is_retryable(&self) -> bool {
        RegistryError::is_retryable(self)
    }

    fn reason(&self) -> String {
        self.details().detail.clone().unwrap_or_else(|| "no answer".into())
    }

    fn from_answer(action: &str, url: &url::Url, status: u16, body: &[u8]) -> Self {
        Self::from_response(action, url, status, body)
    }

    fn with_note(self, note: String) -> Self {
        RegistryError::with_note(self, note)
    }

    fn forbids_retry(body: &[u8]) -> bool {
        forbids_retry(body)
    }
}

/// [`hoist_http::retry::with_retries`] for registry requests.
pub(crate) async fn with_retries<F, Fut>(
    context: RetryContext<'_>,
    action: &str,
    url: &url::Url,
    request: reqwest::RequestBuilder,
    send_once: F,
) -> Result<reqwest::Response, RegistryError>
where
    F: FnMut(reqwest::RequestBuilder) -> Fut,
    Fut: Future<Output = Result<reqwest::Response, RegistryError>>,
{
    hoist_http::retry::with_retries(context, action, url, request, send_once).await
}

fn forbids_retry(body: &[u8]) -> bool {
    crate::error::parse_error_body(body).iter().any(|e| {
        matches!(e.code.as_str(), "DENIED" | "UNAUTHORIZED")
            || e.code.to_ascii_lowercase().contains("quota")
            || e.message.to_ascii_lowercase().contains("quota")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_unauthorized_and_quota_bodies_forbid_a_retry() {
        assert!(forbids_retry(br#"{"errors":[{"code":"DENIED","message":"no"}]}"#));
        assert!(forbids_retry(br#"{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}"#));
        assert!(forbids_retry(br#"{"errors":[{"code":"UNKNOWN","message":"Storage quota exceeded"}]}"#));
        assert!(!forbids_retry(br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#));
        assert!(!forbids_retry(b"<html>502 Bad Gateway</html>"));
    }
}
