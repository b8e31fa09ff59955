use std::fmt;

use url::Url;

/// Query parameters whose values are secrets: distribution's signed upload
/// state, and signatures of pre-signed storage URLs.
const SECRET_QUERY_KEYS: &[&str] =
    &["_state", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "token"];

/// A URL that prints without its secrets: userinfo password and secret query
/// values become `REDACTED`. Use it wherever a URL reaches a log or message.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(Url);

impl RedactedUrl {
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    pub fn inner(&self) -> &Url {
        &self.0
    }
}

impl From<Url> for RedactedUrl {
    fn from(url: Url) -> Self {
        Self(url)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("REDACTED"));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = SECRET_QUERY_KEYS.iter().any(|s| s.eq_ignore_ascii_case(&k));
                    (k.into_owned(), if secret { "REDACTED".to_owned() } else { v.into_owned() })
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(url.as_str())
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_state_and_passwords_but_keeps_the_rest() {
        let url =
            Url::parse("https://user:hunter2@r.example/v2/app/blobs/uploads/1?_state=c2VjcmV0&digest=sha256%3Aab")
                .unwrap();
        let shown = RedactedUrl::new(url).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("_state=REDACTED"), "{shown}");
        assert!(shown.contains("digest=sha256%3Aab"), "{shown}");
    }
}
