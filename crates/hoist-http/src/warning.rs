//! `Warning` headers: a registry's way of telling the user something
//! (a deprecated API, a repository about to be archived) without failing.
//!
//! The distribution spec lets any response carry `Warning: 299 - "text"`;
//! clients should show the text and must not act on it. hoist logs each
//! distinct text once per client (a [`Warnings`]) with `tracing::warn!` (the binary
//! prints warnings on stderr) and changes nothing else. Warnings with other
//! codes (RFC 7234's 1xx caching notes, added by HTTP caches) are logged at
//! debug level only, as containers/image does.

use std::collections::HashSet;
use std::sync::Mutex;

use reqwest::header::{HeaderMap, WARNING};

/// Texts longer than this are cut: a header should not flood the terminal.
const MAX_SHOWN: usize = 500;

/// The texts already shown by one client.
#[derive(Debug, Default)]
pub struct Warnings {
    shown: Mutex<HashSet<String>>,
}

impl Warnings {
    /// Logs the `Warning` headers in `headers` whose text has not been logged yet.
    pub fn observe(&self, registry: &str, headers: &HeaderMap) {
        for value in headers.get_all(WARNING) {
            let value = String::from_utf8_lossy(value.as_bytes());
            for warning in parse(&value) {
                let text = sanitize(&warning.text);
                if text.is_empty() {
                    continue;
                }
                if warning.code != Some(299) {
                    tracing::debug!(registry, code = ?warning.code, "Warning header: {text}");
                    continue;
                }
                let first = self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(text.clone());
                if first {
                    tracing::warn!("registry {registry} warns: {text}");
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Warning {
    /// `None` when the value did not have the RFC 7234 shape; `text` is then the raw value.
    code: Option<u16>,
    text: String,
}

/// Splits one header value into its warnings:
/// `warn-code SP warn-agent SP quoted-text [SP quoted-date]`, comma-separated.
fn parse(value: &str) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((warning, after)) => {
                warnings.push(warning);
                rest = after.trim_start().trim_start_matches(',').trim_start();
            }
            None => {
                warnings.push(Warning { code: None, text: rest.to_owned() });
                break;
            }
        }
    }
    warnings
}

fn parse_one(input: &str) -> Option<(Warning, &str)> {
    let (code, rest) = input.split_once(' ')?;
    let code: u16 = code.parse().ok().filter(|c| (100..1000).contains(c))?;
    let (_agent, rest) = rest.trim_start().split_once(' ')?;
    let (text, mut rest) = quoted(rest.trim_start())?;
    // An optional warn-date, itself a quoted string.
    if let Some(after_space) = rest.strip_prefix(' ')
        && after_space.trim_start().starts_with('"')
    {
        rest = quoted(after_space.trim_start())?.1;
    }
    Some((Warning { code: Some(code), text }, rest))
}

/// A quoted-string at the start of `input` (with `\` escapes) and what follows it.
fn quoted(input: &str) -> Option<(String, &str)> {
    let mut chars = input.strip_prefix('"')?.char_indices();
    let mut text = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?.1),
            '"' => return Some((text, &input[i + 2..])),
            c => text.push(c),
        }
    }
    None
}

/// No control characters (a header must not rewrite the user's terminal), bounded length.
fn sanitize(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.trim();
    match clean.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(code: u16, text: &str) -> Warning {
        Warning { code: Some(code), text: text.to_owned() }
    }

    #[test]
    fn warning_values_are_split_and_unquoted() {
        assert_eq!(parse(r#"299 - "this repository is deprecated""#), vec![w(299, "this repository is deprecated")]);
        assert_eq!(
            parse(r#"299 - "a, b", 299 registry.example "say \"hi\"" "Sat, 01 Jan 2000 00:00:00 GMT", 110 - "stale""#),
            vec![w(299, "a, b"), w(299, r#"say "hi""#), w(110, "stale")]
        );
        assert_eq!(parse("not a warning"), vec![Warning { code: None, text: "not a warning".into() }]);
        assert_eq!(
            parse(r#"299 - "unterminated"#),
            vec![Warning { code: None, text: r#"299 - "unterminated"#.into() }]
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn shown_texts_are_clean_and_bounded() {
        assert_eq!(sanitize("line\u{1b}[2Jcleared\nnext"), "line [2Jcleared next");
        let long = "x".repeat(2000);
        assert_eq!(sanitize(&long).chars().count(), MAX_SHOWN + 1);
    }
}
