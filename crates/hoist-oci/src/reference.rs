use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::{Digest, OciError};

const DOCKER_HUB: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully resolved image reference: `registry/repository[:tag][@digest]`.
///
/// Parsed by docker's rules, so users can type what they type to docker:
/// a first path component is a registry only if it has a `.` or a `:`, or is
/// `localhost`; otherwise the registry is `docker.io`, where one-part names
/// live under `library/`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    pub fn parse(value: &str) -> Result<Self, OciError> {
        let invalid = |reason: &str| OciError::InvalidReference { value: value.to_owned(), reason: reason.to_owned() };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest).map_err(|e| invalid(&e.to_string()))?)),
            None => (value, None),
        };
        let (registry, remainder) = match rest.split_once('/') {
            Some((first, remainder)) if looks_like_registry(first) => (first.to_owned(), remainder),
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        // A tag's colon comes after the last slash; a port's comes before it.
        let last_slash = remainder.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match remainder[last_slash..].rfind(':') {
            Some(i) => (&remainder[..last_slash + i], Some(remainder[last_slash + i + 1..].to_owned())),
            None => (remainder, None),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_owned() } else { registry };
        validate_registry(&registry).map_err(|r| invalid(&r))?;
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        validate_repository(&repository).map_err(|r| invalid(&r))?;
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid("the name is longer than 255 characters"));
        }
        Ok(Self { registry, repository, tag, digest })
    }

    /// Builds a reference from parts that the caller has already validated
    /// against the grammar (e.g. a re-homed name).
    pub fn from_parts(registry: &str, repository: &str, tag: Option<&str>) -> Result<Self, OciError> {
        let mut text = format!("{registry}/{repository}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        Self::parse(&text)
    }

    /// The registry as written by the user (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to send requests to: Docker Hub's API lives on another name.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { "registry-1.docker.io" } else { &self.registry }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `registry/repository`, without tag or digest: where blobs live.
    pub fn location(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What a manifest PUT names: the digest when given, else the tag, else `latest`.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository pinned to `digest`, for printing `REF@sha256:…`.
    #[must_use]
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self { digest: Some(digest), ..self.clone() }
    }

    /// The repository path without Docker Hub's implicit `library/`, as people write it.
    pub fn familiar_path(&self) -> &str {
        match self.repository.strip_prefix("library/") {
            Some(short) if self.registry == DOCKER_HUB => short,
            _ => &self.repository,
        }
    }

    /// True for registries docker talks to over plain HTTP without being told:
    /// `localhost` and loopback addresses.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// True for `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a `host[:port]` registry name, brackets of an IPv6 address removed.
pub fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(host, _)| host)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The value of `--registry [SCHEME://]HOST[:PORT][/PREFIX]`: where archive
/// RepoTags are re-homed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryTarget {
    registry: String,
    prefix: Option<String>,
    plain_http: bool,
    https: bool,
}

impl RegistryTarget {
    pub fn parse(value: &str) -> Result<Self, OciError> {
        let invalid = |reason: &str| OciError::InvalidReference { value: value.to_owned(), reason: reason.to_owned() };
        let (plain_http, https, rest) = if let Some(rest) = value.strip_prefix("http://") {
            (true, false, rest)
        } else if let Some(rest) = value.strip_prefix("https://") {
            (false, true, rest)
        } else {
            (false, false, value)
        };
        let rest = rest.trim_end_matches('/');
        let (registry, prefix) = match rest.split_once('/') {
            Some((registry, prefix)) => (registry, Some(prefix.to_owned())),
            None => (rest, None),
        };
        validate_registry(registry).map_err(|r| invalid(&r))?;
        if let Some(prefix) = &prefix {
            validate_repository(prefix)
                .map_err(|r| invalid(&format!("the path prefix is not a repository path: {r}")))?;
        }
        Ok(Self { registry: registry.to_owned(), prefix, plain_http, https })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The path prefix re-homed names go under (`team` of `host/team`).
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// True when the user wrote `http://`: plain HTTP to this registry.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// True when the user wrote `https://`: HTTPS even on loopback.
    pub fn https(&self) -> bool {
        self.https
    }

    /// Moves `reference` to this registry, under the prefix, keeping its
    /// familiar path and tag: `nginx:1.25` → `host/team/nginx:1.25`.
    pub fn rehome(&self, reference: &Reference) -> Result<Reference, OciError> {
        let path = match &self.prefix {
            Some(prefix) => format!("{prefix}/{}", reference.familiar_path()),
            None => reference.familiar_path().to_owned(),
        };
        Reference::from_parts(&self.registry, &path, reference.tag())
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    if registry.is_empty() {
        return Err("the registry host is empty".into());
    }
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("an IPv6 host needs a closing `]`")?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        (None, after.strip_prefix(':').map(str::to_owned).or_else(|| (!after.is_empty()).then(|| after.to_owned())))
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port.to_owned())),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("`{host}` is not a valid registry host name"));
        }
    }
    if let Some(port) = port
        && (!port.bytes().all(|b| b.is_ascii_digit()) || !port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(format!("`{port}` is not a valid port"));
    }
    Ok(())
}

fn validate_repository(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the repository name is empty".into());
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "`{component}` is not a valid repository path component (lowercase letters, digits, and single `.`, `_`, `__` or `-` separators)"
            ));
        }
    }
    Ok(())
}

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return false;
        }
        let sep_start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
        expect_alnum = true;
    }
    !bytes.is_empty() && !expect_alnum
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a valid tag (up to 128 of letters, digits, `_`, `.`, `-`; not starting with `.` or `-`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(value: &str) -> (String, String, Option<String>) {
        let r = Reference::parse(value).unwrap();
        (r.registry().to_owned(), r.repository().to_owned(), r.tag().map(str::to_owned))
    }

    #[test]
    fn docker_hub_short_names_get_library() {
        assert_eq!(parts("nginx"), ("docker.io".into(), "library/nginx".into(), None));
        assert_eq!(parts("nginx:1.25"), ("docker.io".into(), "library/nginx".into(), Some("1.25".into())));
        assert_eq!(parts("team/app:1"), ("docker.io".into(), "team/app".into(), Some("1".into())));
        assert_eq!(parts("index.docker.io/nginx"), ("docker.io".into(), "library/nginx".into(), None));
        assert_eq!(Reference::parse("nginx").unwrap().api_host(), "registry-1.docker.io");
    }

    #[test]
    fn host_and_port_are_not_tags() {
        assert_eq!(parts("localhost:5000/app"), ("localhost:5000".into(), "app".into(), None));
        assert_eq!(
            parts("127.0.0.1:5000/team/app:v1"),
            ("127.0.0.1:5000".into(), "team/app".into(), Some("v1".into()))
        );
        assert_eq!(parts("[::1]:5000/app:v1"), ("[::1]:5000".into(), "app".into(), Some("v1".into())));
        assert!(Reference::parse("localhost:5000/app").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/app").unwrap().is_loopback());
        assert!(!Reference::parse("registry.example.com/app").unwrap().is_loopback());
    }

    #[test]
    fn digests_are_kept() {
        let d = format!("sha256:{}", "0".repeat(64));
        let r = Reference::parse(&format!("example.com/app:1@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.tag_or_digest(), d);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "team/UPPER",
            "app:",
            "app:-x",
            "example.com/",
            "example.com//app",
            "a/b@sha256:zz",
            "host:99999/app",
            "app name",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn rehoming_keeps_the_familiar_path() {
        let target = RegistryTarget::parse("127.0.0.1:5000/team").unwrap();
        let moved = target.rehome(&Reference::parse("app:1.0").unwrap()).unwrap();
        assert_eq!(moved.to_string(), "127.0.0.1:5000/team/app:1.0");
        let moved = target.rehome(&Reference::parse("quay.io/org/tool:2").unwrap()).unwrap();
        assert_eq!(moved.to_string(), "127.0.0.1:5000/team/org/tool:2");
        let plain = RegistryTarget::parse("http://registry.internal:80").unwrap();
        assert!(plain.plain_http());
        assert_eq!(plain.rehome(&Reference::parse("app").unwrap()).unwrap().to_string(), "registry.internal:80/app");
    }

    proptest! {
        #[test]
        fn display_round_trips(
            host in "[a-z][a-z0-9]{0,8}",
            port in proptest::option::of(1u16..),
            path in "[a-z0-9]{1,8}((\\.|_|__|-+)[a-z0-9]{1,5}){0,2}(/[a-z0-9]{1,8}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let mut text = format!("{host}.example{port}/{path}");
            if let Some(tag) = &tag { text.push(':'); text.push_str(tag); }
            let parsed = Reference::parse(&text).unwrap();
            prop_assert_eq!(parsed.tag(), tag.as_deref());
            prop_assert_eq!(parsed.repository(), path.as_str());
            let again = Reference::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(again, parsed);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = Reference::parse(&text);
            let _ = RegistryTarget::parse(&text);
        }
    }
}
