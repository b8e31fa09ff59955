use std::fmt;

use hoist_http::{HttpError, HttpErrorKind, RedactedUrl};

/// What went wrong talking to Harbor's API, in terms a caller can act on
/// (the binary gives each its exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HarborErrorKind {
    /// The API could not be reached, or the connection broke or stalled.
    Network,
    /// 408, 429 or 5xx: Harbor is busy or failing.
    Unavailable,
    /// 401: no credentials, or Harbor refused them.
    Unauthorized,
    /// 403 for anything but creating a project.
    Forbidden,
    /// Harbor refused to create the project: creation is restricted to
    /// administrators, or the account is a robot of one project.
    CreationRestricted,
    /// The project does not exist, and it was not to be created.
    ProjectMissing,
    /// The name cannot be a Harbor project, or the repository names none.
    InvalidName,
    /// Harbor refused what was sent (400, and other 4xx).
    Rejected,
    /// An answer Harbor's API does not give.
    Protocol,
    /// A problem on this machine (TLS material, proxy settings).
    Local,
}

/// One `{"code", "message"}` of Harbor's `{"errors": [...]}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiMessage {
    pub code: String,
    pub message: String,
}

/// A failed Harbor API call: what was attempted, where, what Harbor said,
/// and what to do. Boxed, so that `Result`s carrying it stay small.
#[derive(Debug)]
pub struct HarborError(Box<Details>);

#[derive(Debug)]
struct Details {
    kind: HarborErrorKind,
    action: String,
    url: Option<RedactedUrl>,
    status: Option<u16>,
    messages: Vec<ApiMessage>,
    detail: Option<String>,
    hint: Option<String>,
    no_connection: bool,
}

impl HarborError {
    pub fn new(kind: HarborErrorKind, action: impl Into<String>) -> Self {
        Self(Box::new(Details {
            kind,
            action: action.into(),
            url: None,
            status: None,
            messages: Vec::new(),
            detail: None,
            hint: None,
            no_connection: false,
        }))
    }

    #[must_use]
    pub fn with_url(mut self, url: &url::Url) -> Self {
        self.0.url = Some(RedactedUrl::new(url.clone()));
        self
    }

    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub(crate) fn with_kind(mut self, kind: HarborErrorKind) -> Self {
        self.0.kind = kind;
        self
    }

    /// The error for an answer with `status` and (the start of) `body`.
    pub fn from_answer(action: &str, url: &url::Url, status: u16, body: &[u8]) -> Self {
        let messages = parse_errors(body);
        let kind = match status {
            401 => HarborErrorKind::Unauthorized,
            403 => HarborErrorKind::Forbidden,
            408 | 429 | 500..=599 => HarborErrorKind::Unavailable,
            400..=499 => HarborErrorKind::Rejected,
            _ => HarborErrorKind::Protocol,
        };
        let mut error = Self::new(kind, action).with_url(url);
        error.0.status = Some(status);
        if messages.is_empty() && !body.is_empty() {
            error.0.detail = Some(hoist_http::body_excerpt(body));
        }
        error.0.messages = messages;
        error
    }

    pub fn kind(&self) -> HarborErrorKind {
        self.0.kind
    }

    /// The HTTP status, when Harbor answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// What Harbor's error body said.
    pub fn messages(&self) -> &[ApiMessage] {
        &self.0.messages
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        if let Some(hint) = &self.0.hint {
            return Some(hint.clone());
        }
        let host = self.0.url.as_ref().and_then(|u| u.inner().host_str().map(str::to_owned)).unwrap_or_default();
        Some(match self.0.kind {
            HarborErrorKind::Network => format!("check that Harbor is running at {host} and that the address is right"),
            HarborErrorKind::Unavailable => "Harbor is overloaded or failing; try again later".into(),
            HarborErrorKind::Unauthorized => {
                "log in with `hoist login HOST`, or give `--username` with `--password-stdin`".into()
            }
            HarborErrorKind::Forbidden | HarborErrorKind::CreationRestricted => {
                "the account lacks the permission for this; ask a Harbor administrator".into()
            }
            HarborErrorKind::ProjectMissing => "create the project in Harbor first".into(),
            HarborErrorKind::InvalidName => "Harbor project names are lower-case letters and digits, separated by \
                                             single `.`, `_` or `-`"
                .into(),
            HarborErrorKind::Rejected => "Harbor refused the request for the reason above".into(),
            HarborErrorKind::Protocol => {
                "Harbor answered in a way hoist does not expect; run again with `-v` and report it".into()
            }
            HarborErrorKind::Local => "fix the local file or setting named above".into(),
        })
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.0.kind, HarborErrorKind::Network | HarborErrorKind::Unavailable) && !self.0.no_connection
    }

    fn add_note(mut self, note: String) -> Self {
        self.0.detail = Some(match self.0.detail.take() {
            Some(detail) => format!("{detail}; {note}"),
            None => note,
        });
        self
    }
}

impl fmt::Display for HarborError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &*self.0;
        write!(f, "cannot {}", d.action)?;
        if let Some(url) = &d.url {
            write!(f, " ({url})")?;
        }
        if let Some(status) = d.status {
            write!(f, ": HTTP {status}")?;
            for message in &d.messages {
                write!(f, " {}: {}", message.code, message.message)?;
            }
        }
        if let Some(detail) = &d.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HarborError {}

impl From<HttpError> for HarborError {
    fn from(error: HttpError) -> Self {
        let kind = match error.kind() {
            HttpErrorKind::Network => HarborErrorKind::Network,
            HttpErrorKind::Protocol => HarborErrorKind::Protocol,
            HttpErrorKind::Local => HarborErrorKind::Local,
        };
        Self(Box::new(Details {
            kind,
            action: error.action().to_owned(),
            url: error.url().cloned(),
            status: None,
            messages: Vec::new(),
            detail: error.detail().map(str::to_owned),
            hint: error.hint().map(str::to_owned),
            no_connection: error.no_connection(),
        }))
    }
}

impl hoist_http::RetryError for HarborError {
    fn is_retryable(&self) -> bool {
        HarborError::is_retryable(self)
    }

    fn reason(&self) -> String {
        self.0.detail.clone().unwrap_or_else(|| "no answer".into())
    }

    fn from_answer(action: &str, url: &url::Url, status: u16, body: &[u8]) -> Self {
        HarborError::from_answer(action, url, status, body)
    }

    fn with_note(self, note: String) -> Self {
        self.add_note(note)
    }

    fn forbids_retry(body: &[u8]) -> bool {
        // A refusal stays a refusal, whatever the status it came with.
        parse_errors(body).iter().any(|m| matches!(m.code.as_str(), "UNAUTHORIZED" | "FORBIDDEN"))
    }
}

/// Harbor's `{"errors":[{"code","message"}]}` (`src/lib/http/error.go`
/// `SendError`); anything else (the legacy `/c/` routes answer plain text
/// or nothing) gives no messages.
pub(crate) fn parse_errors(body: &[u8]) -> Vec<ApiMessage> {
    hoist_http::error_entries(body).into_iter().map(|(code, message)| ApiMessage { code, message }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harbor_error_bodies_are_read_and_classified() {
        let url = url::Url::parse("https://harbor.example/api/v2.0/projects").unwrap();
        let body = br#"{"errors":[{"code":"FORBIDDEN","message":"Only system admin can create project"}]}"#;
        let error = HarborError::from_answer("create project `team`", &url, 403, body);
        assert_eq!(error.kind(), HarborErrorKind::Forbidden);
        assert_eq!(error.messages()[0].message, "Only system admin can create project");
        let shown = error.to_string();
        assert!(shown.contains("HTTP 403 FORBIDDEN: Only system admin can create project"), "{shown}");
        assert_eq!(HarborError::from_answer("x", &url, 409, b"").kind(), HarborErrorKind::Rejected);
        assert_eq!(HarborError::from_answer("x", &url, 503, b"<html>").kind(), HarborErrorKind::Unavailable);
        let error = HarborError::from_answer("x", &url, 500, b"\x1b[2Jboom");
        assert!(!error.to_string().contains('\x1b'), "{error}");
    }

    #[test]
    fn refusals_are_never_retried() {
        use hoist_http::RetryError as _;
        assert!(HarborError::forbids_retry(br#"{"errors":[{"code":"UNAUTHORIZED","message":"x"}]}"#));
        assert!(!HarborError::forbids_retry(br#"{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}"#));
    }
}
