use std::fmt;

use crate::RedactedUrl;

/// What went wrong, in terms a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The registry could not be reached or the connection broke. Retryable.
    Network,
    /// 408, 429, 500, 502, 503, 504: the registry is busy or failing. Retryable.
    Unavailable,
    /// 401: credentials missing or refused.
    Unauthorized,
    /// 403 or DENIED: the credentials lack permission (or a quota is exhausted).
    Denied,
    /// 404: the repository, blob or manifest does not exist.
    NotFound,
    /// The registry refused what was sent (400, 413, 415, DIGEST_INVALID, MANIFEST_INVALID, …).
    Rejected,
    /// The registry answered in a way the protocol does not allow (no
    /// `Location`, a redirect on an upload, an answer larger than any
    /// registry sends).
    Protocol,
    /// Bytes did not hash to the digest they were named by: a blob or
    /// manifest the registry served, or the digest it reported for what was sent.
    Mismatch,
    /// A problem on this machine, not at the registry: an unreadable CA file
    /// or `certs.d` entry, a proxy setting that is not a URL, a failed local write.
    Local,
}

impl ErrorKind {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Network | Self::Unavailable)
    }
}

/// One `{"code", "message"}` from a registry error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: String,
    pub message: String,
}

/// A failed registry operation: what was attempted, where, and why.
/// Boxed, so that `Result`s carrying it stay small.
#[derive(Debug)]
pub struct RegistryError(Box<Details>);

/// The parts of a [`RegistryError`].
#[derive(Debug)]
pub struct Details {
    pub kind: ErrorKind,
    /// What hoist was doing, e.g. "upload blob sha256:…".
    pub action: String,
    pub url: Option<RedactedUrl>,
    pub status: Option<u16>,
    pub codes: Vec<ErrorCode>,
    /// The registry's body when it was not the JSON error shape (trimmed), or a transport error.
    pub detail: Option<String>,
    /// A hint that knows more than the kind does (which credentials were refused, a TLS problem).
    pub hint: Option<String>,
    /// No connection could be made (refused, or the name did not resolve):
    /// more likely a wrong address than a passing failure, so not retried.
    pub(crate) no_connection: bool,
}

impl RegistryError {
    pub(crate) fn new(kind: ErrorKind, action: impl Into<String>) -> Self {
        Self(Box::new(Details {
            kind,
            action: action.into(),
            url: None,
            status: None,
            codes: Vec::new(),
            detail: None,
            hint: None,
            no_connection: false,
        }))
    }

    #[must_use]
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub(crate) fn with_url(mut self, url: &url::Url) -> Self {
        self.0.url = Some(RedactedUrl::new(url.clone()));
        self
    }

    #[must_use]
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Adds `note` to the detail (after what is there).
    #[must_use]
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        self.0.detail = Some(match self.0.detail.take() {
            Some(detail) => format!("{detail}; {note}"),
            None => note,
        });
        self
    }

    /// Everything known about the failure.
    pub fn details(&self) -> &Details {
        &self.0
    }

    /// Builds the error for an unexpected HTTP answer from its status and body.
    pub(crate) fn from_response(action: &str, url: &url::Url, status: u16, body: &[u8]) -> Self {
        let codes = parse_error_body(body);
        let kind = classify(status, &codes);
        let detail = if codes.is_empty() && !body.is_empty() { Some(trim_body(body)) } else { None };
        Self(Box::new(Details {
            kind,
            action: action.to_owned(),
            url: Some(RedactedUrl::new(url.clone())),
            status: Some(status),
            codes,
            detail,
            hint: None,
            no_connection: false,
        }))
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// Whether trying again later may succeed: a busy or failing registry,
    /// or a connection that broke (not one that could not be made).
    pub fn is_retryable(&self) -> bool {
        self.0.kind.is_retryable() && !self.0.no_connection
    }

    /// True when the registry said this code (e.g. `BLOB_UNKNOWN`).
    pub fn has_code(&self, code: &str) -> bool {
        self.0.codes.iter().any(|c| c.code == code)
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        let d = &*self.0;
        if let Some(hint) = &d.hint {
            return Some(hint.clone());
        }
        let host = d.url.as_ref().and_then(|u| u.inner().host_str().map(str::to_owned)).unwrap_or_default();
        Some(match d.kind {
            ErrorKind::Network => format!(
                "check that a registry is running at {host}{} and that the address is right",
                d.url.as_ref().and_then(|u| u.inner().port()).map(|p| format!(":{p}")).unwrap_or_default()
            ),
            ErrorKind::Unavailable => "the registry is overloaded or failing; try again later".into(),
            ErrorKind::Unauthorized => "log in with `--username` and `--password-stdin`, or `docker login`".into(),
            ErrorKind::Denied => {
                "the account lacks push permission for this repository, or a quota is exhausted".into()
            }
            ErrorKind::NotFound if self.repository_unknown() => {
                let repository = d.url.as_ref().and_then(|u| repository_of(u.inner())).unwrap_or_default();
                let project = repository.split('/').next().unwrap_or_default();
                let port = d.url.as_ref().and_then(|u| u.inner().port()).map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "repository `{repository}` does not exist on {host}{port}: check the name. Registries that do not \
                     create repositories on push need it created first: on Amazon ECR, `aws ecr create-repository \
                     --repository-name {repository}`; on Harbor, create the project `{project}` (hoist does not \
                     create either)"
                )
            }
            ErrorKind::NotFound => {
                "check the repository name; some registries (ECR, Harbor) need the repository or project created first"
                    .into()
            }
            ErrorKind::Rejected if d.status == Some(413) => {
                "a proxy in front of the registry limits request size".into()
            }
            ErrorKind::Rejected if self.has_code("MANIFEST_INVALID") || self.has_code("TAG_INVALID") => {
                "the registry refused the manifest for the reason above; registries with policies (immutable \
                 tags, allowed media types) refuse some: try a new tag, or the other `--format`"
                    .into()
            }
            ErrorKind::Rejected => "the registry refused the request for the reason above".into(),
            ErrorKind::Protocol => {
                "the registry answered in a way hoist does not expect; run again with `-v` and report it".into()
            }
            ErrorKind::Mismatch => "the registry, or a proxy in front of it, did not store or serve the exact bytes; \
                                    try again, and report it to the registry's operators if it persists"
                .into(),
            ErrorKind::Local => "fix the local file or setting named above".into(),
        })
    }
}

impl RegistryError {
    /// The registry says the repository itself is unknown: distribution's
    /// and ECR's `NAME_UNKNOWN`, or Harbor's "project … not found".
    fn repository_unknown(&self) -> bool {
        self.has_code("NAME_UNKNOWN")
            || self.0.codes.iter().any(|c| {
                let message = c.message.to_ascii_lowercase();
                message.contains("project") && message.contains("not found")
            })
    }
}

/// `team/app` from `…/v2/team/app/blobs/…` (or `/manifests/`, `/tags/`).
fn repository_of(url: &url::Url) -> Option<String> {
    let path = url.path().strip_prefix("/v2/")?;
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .find_map(|marker| path.find(marker))
        .map(|end| path[..end].to_owned())
        .filter(|name| !name.is_empty())
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &*self.0;
        write!(f, "cannot {}", d.action)?;
        if let Some(url) = &d.url {
            write!(f, " ({url})")?;
        }
        match (d.status, d.codes.first()) {
            (Some(status), Some(code)) => {
                write!(f, ": HTTP {status} {}: {}", code.code, code.message)?;
                for more in &d.codes[1..] {
                    write!(f, "; {}: {}", more.code, more.message)?;
                }
            }
            (Some(status), None) => write!(f, ": HTTP {status}")?,
            (None, _) => {}
        }
        if let Some(detail) = &d.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

impl From<hoist_http::HttpError> for RegistryError {
    fn from(error: hoist_http::HttpError) -> Self {
        let kind = match error.kind() {
            hoist_http::HttpErrorKind::Network => ErrorKind::Network,
            hoist_http::HttpErrorKind::Protocol => ErrorKind::Protocol,
            hoist_http::HttpErrorKind::Local => ErrorKind::Local,
        };
        Self(Box::new(Details {
            kind,
            action: error.action().to_owned(),
            url: error.url().cloned(),
            status: None,
            codes: Vec::new(),
            detail: error.detail().map(str::to_owned),
            hint: error.hint().map(str::to_owned),
            no_connection: error.no_connection(),
        }))
    }
}

fn classify(status: u16, codes: &[ErrorCode]) -> ErrorKind {
    let has = |c: &str| codes.iter().any(|e| e.code == c);
    if has("DENIED") {
        return ErrorKind::Denied;
    }
    if has("TOOMANYREQUESTS") {
        return ErrorKind::Unavailable;
    }
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Denied,
        404 => ErrorKind::NotFound,
        408 | 429 | 500 | 502 | 503 | 504 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::Rejected,
        _ => ErrorKind::Protocol,
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

pub(crate) fn parse_error_body(body: &[u8]) -> Vec<ErrorCode> {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.errors.into_iter().map(|e| ErrorCode { code: e.code, message: e.message }).collect())
        .unwrap_or_default()
}

fn trim_body(body: &[u8]) -> String {
    const SHOWN: usize = 300;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > SHOWN { format!("{text}…") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_are_parsed_and_classified() {
        let url = url::Url::parse("http://r/v2/").unwrap();
        let e = RegistryError::from_response(
            "push",
            &url,
            403,
            br#"{"errors":[{"code":"DENIED","message":"quota exceeded"}]}"#,
        );
        assert_eq!(e.kind(), ErrorKind::Denied);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("DENIED: quota exceeded"));
        let e = RegistryError::from_response("push", &url, 502, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("Bad Gateway"));
        let e = RegistryError::from_response("push", &url, 413, b"");
        assert!(e.hint().unwrap().contains("proxy"));
    }

    #[test]
    fn an_unknown_repository_says_how_to_create_it() {
        let url =
            url::Url::parse("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/team/app/blobs/uploads/").unwrap();
        // ECR's answer to a push into a repository nobody created.
        let ecr = RegistryError::from_response(
            "start a blob upload to team/app",
            &url,
            404,
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'team/app' does not exist in the registry with id '123456789012'"}]}"#,
        );
        assert_eq!(ecr.kind(), ErrorKind::NotFound);
        let hint = ecr.hint().unwrap();
        assert!(hint.contains("repository `team/app` does not exist on 123456789012.dkr.ecr"), "{hint}");
        assert!(hint.contains("aws ecr create-repository --repository-name team/app"), "{hint}");
        assert!(hint.contains("create the project `team`"), "{hint}");
        // Harbor's answer when the project is missing.
        let url = url::Url::parse("https://harbor.example/v2/library2/app/manifests/1").unwrap();
        let harbor = RegistryError::from_response(
            "push manifest",
            &url,
            404,
            br#"{"errors":[{"code":"NOT_FOUND","message":"project library2 not found"}]}"#,
        );
        assert!(harbor.hint().unwrap().contains("create the project `library2`"), "{:?}", harbor.hint());
        // Any other 404 keeps the general hint.
        let blob = RegistryError::from_response("read blob", &url, 404, br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#);
        assert!(blob.hint().unwrap().starts_with("check the repository name"), "{:?}", blob.hint());
    }
}
