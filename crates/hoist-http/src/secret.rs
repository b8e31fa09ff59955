use std::fmt;

use base64::Engine as _;
use reqwest::header::HeaderValue;

/// A password, token or session cookie. Prints as `Secret(…)` so it cannot
/// leak through `Debug` or a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that puts it on the wire (or in a
    /// credential store).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// `Authorization: Basic` for `username` and `password`, marked sensitive.
pub fn basic_authorization(username: &str, password: &Secret) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    sensitive_header(&format!("Basic {encoded}"))
}

/// A header value that holds a secret: marked sensitive, so that nothing
/// that prints headers shows it.
pub fn sensitive_header(value: &str) -> HeaderValue {
    // Control characters in a secret would make the header invalid; send nothing rather than panic.
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}
