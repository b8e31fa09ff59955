//! Platforms (`os/architecture[/variant]`) and choosing one from an index
//! by containerd's rules, so `hoist pull` picks what `docker pull` would.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::OciError;

/// `os/architecture[/variant]`, as in an image config or an index entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = if self.os.is_empty() { "unknown" } else { &self.os };
        let arch = if self.architecture.is_empty() { "unknown" } else { &self.architecture };
        write!(f, "{os}/{arch}")?;
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` (or a bare `arch`, meaning this host's OS),
    /// as `docker pull --platform` does.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let invalid = |reason: &str| OciError::InvalidPlatform { value: text.to_owned(), reason: reason.to_owned() };
        let parts: Vec<&str> = text.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))) {
            return Err(invalid("expected `os/arch[/variant]`, e.g. `linux/arm64` or `linux/arm/v7`"));
        }
        match parts[..] {
            [arch] => Ok(Self::new(&Self::host().os, arch, None)),
            [os, arch] => Ok(Self::new(os, arch, None)),
            [os, arch, variant] => Ok(Self::new(os, arch, Some(variant))),
            _ => Err(invalid("expected at most three parts: `os/arch/variant`")),
        }
    }

    /// The platform of this machine, as containerd names it.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Self::new(std::env::consts::OS, arch, None).normalized()
    }

    /// True for what no runtime runs: buildx writes attestation manifests
    /// into indexes as `unknown/unknown`.
    pub fn is_unknown(&self) -> bool {
        matches!(self.os.as_str(), "" | "unknown") && matches!(self.architecture.as_str(), "" | "unknown")
    }

    /// containerd's normalisation: `x86_64` is `amd64`, `aarch64` is `arm64`
    /// (whose `v8` is the default, so dropped), `arm` without a variant is `v7`.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let variant = self.variant.as_deref().unwrap_or_default();
        let (arch, variant) = match (self.architecture.to_ascii_lowercase().as_str(), variant) {
            ("i386", _) => ("386".to_owned(), String::new()),
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64".to_owned(), String::new()),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_owned(), v.to_owned()),
            ("aarch64" | "arm64", "8" | "v8") => ("arm64".to_owned(), String::new()),
            ("aarch64" | "arm64", v) => ("arm64".to_owned(), v.to_owned()),
            ("armhf", _) | ("arm", "" | "7") => ("arm".to_owned(), "v7".to_owned()),
            ("armel", _) => ("arm".to_owned(), "v6".to_owned()),
            ("arm", v @ ("5" | "6" | "8")) => ("arm".to_owned(), format!("v{v}")),
            (arch, v) => (arch.to_owned(), v.to_owned()),
        };
        Self { os, architecture: arch, variant: Some(variant).filter(|v| !v.is_empty()) }
    }

    /// What this platform runs, best first, as containerd's `platforms.Only`
    /// orders it: itself, then older variants of its architecture (`arm/v7`
    /// also runs `v6` and `v5`; `amd64/v3` also `v2` and plain `amd64`).
    fn runs(&self) -> Vec<Self> {
        let me = self.normalized();
        let mut all = vec![me.clone()];
        let variant_number =
            me.variant.as_deref().and_then(|v| v.strip_prefix('v')).and_then(|n| n.parse::<u32>().ok());
        match (me.architecture.as_str(), variant_number) {
            ("arm", Some(n)) => {
                all.extend((5..n).rev().map(|older| Self::new(&me.os, "arm", Some(&format!("v{older}")))));
            }
            ("amd64", Some(n)) => {
                all.extend((2..n).rev().map(|older| Self::new(&me.os, "amd64", Some(&format!("v{older}")))));
                all.push(Self::new(&me.os, "amd64", None));
            }
            _ => {}
        }
        all
    }

    /// Whether an image for `candidate` runs here (containerd's `Only` matcher).
    pub fn matches(&self, candidate: &Self) -> bool {
        let candidate = candidate.normalized();
        self.runs().contains(&candidate)
    }

    /// The best of `candidates` for this platform: the exact match if there
    /// is one, else the newest older variant; unknown platforms never.
    pub fn choose<'a, T>(&self, candidates: impl IntoIterator<Item = (&'a Self, T)>) -> Option<T> {
        let candidates: Vec<(Self, T)> =
            candidates.into_iter().filter(|(p, _)| !p.is_unknown()).map(|(p, t)| (p.normalized(), t)).collect();
        let runs = self.runs();
        let best = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, (p, _))| runs.iter().position(|r| r == p).map(|rank| (rank, i)))
            .min()?
            .1;
        candidates.into_iter().nth(best).map(|(_, t)| t)
    }
}

impl std::str::FromStr for Platform {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm/v7").variant.as_deref(), Some("v7"));
        assert_eq!(p("arm64").os, std::env::consts::OS);
        for bad in ["", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_is_normalised() {
        let host = Platform::host();
        assert_eq!(host, host.normalized());
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn aliases_and_default_variants_match_as_in_containerd() {
        assert!(p("linux/amd64").matches(&Platform::new("linux", "x86_64", None)));
        assert!(p("linux/amd64").matches(&Platform::new("linux", "amd64", Some("v1"))));
        assert!(p("linux/arm64").matches(&Platform::new("linux", "aarch64", Some("v8"))));
        assert!(p("linux/arm64/v8").matches(&Platform::new("linux", "arm64", None)));
        assert!(p("linux/arm").matches(&Platform::new("linux", "arm", Some("v7"))));
        assert!(p("linux/arm/v7").matches(&Platform::new("linux", "arm", Some("v6"))));
        assert!(!p("linux/arm/v6").matches(&Platform::new("linux", "arm", Some("v7"))));
        assert!(!p("linux/amd64").matches(&Platform::new("linux", "amd64", Some("v3"))));
        assert!(p("linux/amd64/v3").matches(&Platform::new("linux", "amd64", None)));
        assert!(!p("linux/amd64").matches(&Platform::new("windows", "amd64", None)));
        assert!(!p("linux/amd64").matches(&Platform::new("linux", "arm64", None)));
    }

    #[test]
    fn chooses_the_exact_variant_first_and_never_unknown() {
        let index = [
            Platform::new("unknown", "unknown", None),
            Platform::new("linux", "arm", Some("v6")),
            Platform::new("linux", "arm", Some("v7")),
            Platform::new("linux", "amd64", None),
        ];
        let candidates = || index.iter().enumerate().map(|(i, p)| (p, i));
        assert_eq!(p("linux/arm/v7").choose(candidates()), Some(2));
        assert_eq!(p("linux/arm/v8").choose(candidates()), Some(2));
        assert_eq!(p("linux/arm/v6").choose(candidates()), Some(1));
        assert_eq!(p("linux/amd64").choose(candidates()), Some(3));
        assert_eq!(p("linux/s390x").choose(candidates()), None);
        assert_eq!(Platform::new("unknown", "unknown", None).choose(candidates()), None);
    }
}
