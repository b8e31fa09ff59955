use std::fmt;

use crate::RedactedUrl;

/// What kind of transport failure an [`HttpError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The server could not be reached, the connection broke, or it stopped
    /// making progress. Retryable, unless no connection could be made.
    Network,
    /// The answer broke HTTP or a bound: it cannot be parsed, it redirects
    /// too often, it is larger than any server of this kind sends.
    Protocol,
    /// A problem on this machine: an unreadable CA file or `certs.d` entry,
    /// a proxy setting that is not a URL.
    Local,
}

/// A failure below any API: building the client, or a request that got no
/// usable answer. Each API crate turns it into its own error type. Boxed,
/// so that `Result`s carrying it stay small.
#[derive(Clone, Debug)]
pub struct HttpError(Box<Inner>);

#[derive(Clone, Debug)]
struct Inner {
    kind: HttpErrorKind,
    action: String,
    url: Option<RedactedUrl>,
    detail: Option<String>,
    hint: Option<String>,
    no_connection: bool,
}

impl HttpError {
    pub fn new(kind: HttpErrorKind, action: impl Into<String>) -> Self {
        Self(Box::new(Inner { kind, action: action.into(), url: None, detail: None, hint: None, no_connection: false }))
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

    /// The error for a request that got no HTTP answer, by its innermost
    /// cause (never reqwest's message, which carries the URL unredacted).
    pub fn from_transport(action: &str, url: &url::Url, error: &reqwest::Error) -> Self {
        let cause = transport_cause(error);
        // An answer HTTP cannot parse (a head too large, a bad status line),
        // too many redirects or a request that cannot be built fail the same
        // way every time: a protocol problem, never retried.
        let deterministic = error.is_builder() || error.is_redirect() || is_unparsable_answer(error);
        let kind = if deterministic { HttpErrorKind::Protocol } else { HttpErrorKind::Network };
        let mut built = Self::new(kind, action).with_url(url);
        if let Some(hint) = tls_hint(&cause, url) {
            built = built.with_hint(hint);
        }
        // A TLS peer that refuses our certificate (or whose certificate we
        // refuse) will do so again: reported at once, like a refused connection.
        let refused_tls = tls_refusal(&cause);
        let mut built = built.with_detail(cause);
        built.0.no_connection = (error.is_connect() && !error.is_timeout()) || refused_tls;
        built
    }

    pub fn kind(&self) -> HttpErrorKind {
        self.0.kind
    }

    /// What was being done, e.g. "upload blob sha256:…".
    pub fn action(&self) -> &str {
        &self.0.action
    }

    pub fn url(&self) -> Option<&RedactedUrl> {
        self.0.url.as_ref()
    }

    /// The cause, without the URL.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// No connection could be made (refused, or the name did not resolve):
    /// more likely a wrong address than a passing failure.
    pub fn no_connection(&self) -> bool {
        self.0.no_connection
    }

    /// Whether trying again later may succeed: a connection that broke or
    /// stalled, not one that could not be made.
    pub fn is_retryable(&self) -> bool {
        self.0.kind == HttpErrorKind::Network && !self.0.no_connection
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}", self.0.action)?;
        if let Some(url) = &self.0.url {
            write!(f, " ({url})")?;
        }
        if let Some(detail) = &self.0.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

/// The `{"errors":[{"code","message"}]}` body distribution registries and
/// Harbor's API answer errors with: each code and message, control
/// characters replaced and lengths bounded (a server must not rewrite the
/// user's terminal); nothing when the body has another shape.
pub fn error_entries(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors.into_iter().map(|e| (printable(&e.code, 100), printable(&e.message, 500))).collect())
        .unwrap_or_default()
}

/// The start of a body that is not an error document (a proxy's HTML
/// page), for a message: whitespace folded, at most 300 characters.
pub fn body_excerpt(body: &[u8]) -> String {
    const SHOWN: usize = 300;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = printable(&text.split_whitespace().collect::<Vec<_>>().join(" "), SHOWN);
    if body.len() > SHOWN { format!("{text}…") } else { text }
}

/// `text` without control characters, cut at `max` characters.
fn printable(text: &str, max: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match clean.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

/// `error` and its causes, `: `-joined.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The innermost cause of a transport error, without the URL (which may hold
/// secrets and is reported separately, redacted).
fn transport_cause(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut last = None;
    while let Some(cause) = source {
        last = Some(cause.to_string());
        source = cause.source();
    }
    let cause = last.unwrap_or_else(|| "the request failed".into());
    if error.is_timeout() { format!("timed out ({cause})") } else { cause }
}

/// hyper could not parse the answer (its head too large, its status line or
/// headers malformed).
fn is_unparsable_answer(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper.is_parse() || hyper.is_parse_status();
        }
        source = cause.source();
    }
    false
}

/// Whether a transport failure is a TLS certificate refusal, by either side:
/// the same on every attempt.
fn tls_refusal(cause: &str) -> bool {
    let lower = cause.to_ascii_lowercase().replace(' ', "");
    ["certificaterequired", "badcertificate", "unknownca", "invalidpeercertificate", "unknownissuer"]
        .iter()
        .any(|refusal| lower.contains(refusal))
}

/// A hint for TLS failures, which otherwise read as "is a server running?".
fn tls_hint(cause: &str, url: &url::Url) -> Option<String> {
    let host = url.host_str().unwrap_or_default();
    let host_port = url.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    let lower = cause.to_ascii_lowercase().replace(' ', "");
    if lower.contains("certificaterequired") || lower.contains("badcertificate") {
        Some(format!(
            "{host_port} wants a client certificate: put `client.cert` and `client.key` in \
             /etc/docker/certs.d/{host_port}/ (or the directory given by --certs-dir)"
        ))
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        Some(format!(
            "the registry's TLS certificate is not trusted: pass its CA with `--ca-cert FILE`, or put it in \
             /etc/docker/certs.d/{host_port}/ca.crt (`--insecure` skips the check)"
        ))
    } else if lower.contains("handshake") || lower.contains("tls") || lower.contains("alert") {
        Some(format!(
            "the TLS handshake with {host_port} failed: if it wants a client certificate, put `client.cert` and \
             `client.key` in /etc/docker/certs.d/{host_port}/; if it speaks plain HTTP, use `--plain-http`"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_read_and_made_printable() {
        let body = br#"{"errors":[{"code":"DENIED","message":"no\u001b[2J way"},{"message":"second"}]}"#;
        assert_eq!(error_entries(body), [("DENIED".into(), "no [2J way".into()), (String::new(), "second".into())]);
        assert!(error_entries(b"<html>").is_empty());
        let long = format!("{{\"errors\":[{{\"code\":\"X\",\"message\":\"{}\"}}]}}", "m".repeat(2000));
        assert_eq!(error_entries(long.as_bytes())[0].1.chars().count(), 501);
        assert_eq!(
            body_excerpt(b"<html>\n  <body>Bad\tGateway</body>\n</html>"),
            "<html> <body>Bad Gateway</body> </html>"
        );
        assert!(body_excerpt(&[b'x'; 400]).ends_with('…'));
    }
}
