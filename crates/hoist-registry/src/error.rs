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
        let detail = if codes.is_empty() && !body.is_empty() { Some(hoist_http::body_excerpt(body)) } else { None };
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
            ErrorKind::Denied => match Flavour::of(&host) {
                Flavour::GitLab => {
                    let repository = d.url.as_ref().and_then(|u| repository_of(u.inner())).unwrap_or_default();
                    format!(
                        "the account lacks push permission for `{repository}` on {host}, or a quota is exhausted. \
                         On GitLab the project must exist first (its container repositories are created on push, \
                         at most two path levels below the project): create it in GitLab, or check the path"
                    )
                }
                _ => "the account lacks push permission for this repository, or a quota is exhausted".into(),
            },
            ErrorKind::NotFound if self.repository_unknown() => {
                let repository = d.url.as_ref().and_then(|u| repository_of(u.inner())).unwrap_or_default();
                let port = d.url.as_ref().and_then(|u| u.inner().port()).map(|p| format!(":{p}")).unwrap_or_default();
                let place = format!("{host}{port}");
                if self.harbor_project_missing() {
                    let project = repository.split('/').next().unwrap_or_default();
                    format!(
                        "the Harbor project `{project}` does not exist on {place} (Harbor says so with a 401, which is \
                         not about credentials): check the name; to push, create the project, or let hoist create \
                         it (without `--no-create`, with an account allowed to create projects)"
                    )
                } else {
                    Flavour::of(&host).unknown_repository_hint(&repository, &place)
                }
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
        self.has_code("NAME_UNKNOWN") || self.harbor_project_missing()
    }

    /// Harbor's answer for a repository in a project that does not exist.
    pub fn harbor_project_missing(&self) -> bool {
        harbor_project_missing(&self.0.codes)
    }
}

/// Harbor answers a registry request into a project that does not exist
/// with `401 UNAUTHORIZED` "project NAME not found" (its `/v2` middleware,
/// `src/server/middleware/v2auth/auth.go`, fails the project lookup before
/// any permission check); some versions say it with a 404 `NOT_FOUND`.
fn harbor_project_missing(codes: &[ErrorCode]) -> bool {
    codes.iter().any(|c| {
        let message = c.message.to_ascii_lowercase();
        message.starts_with("project ") && message.contains(" not found")
    })
}

/// Registries that do not create what a push names, told by host name.
enum Flavour {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com`
    Ecr {
        region: Option<String>,
    },
    /// `LOCATION-docker.pkg.dev`
    Gar {
        location: String,
    },
    /// `registry.gitlab.com`, or a self-hosted name with `gitlab` in it.
    GitLab,
    Other,
}

impl Flavour {
    fn of(host: &str) -> Self {
        let host = host.to_ascii_lowercase();
        if let Some(rest) = host.strip_suffix(".amazonaws.com") {
            let region = rest.split_once(".dkr.ecr.").map(|(_, region)| region.to_owned());
            return Self::Ecr { region };
        }
        if let Some(location) = host.strip_suffix("-docker.pkg.dev") {
            return Self::Gar { location: location.to_owned() };
        }
        if host.split('.').any(|label| label.contains("gitlab")) {
            return Self::GitLab;
        }
        Self::Other
    }

    /// What to say when `repository` does not exist at `place` (`host[:port]`).
    fn unknown_repository_hint(&self, repository: &str, place: &str) -> String {
        match self {
            Self::Ecr { region } => {
                let region = region.as_deref().map(|r| format!(" --region {r}")).unwrap_or_default();
                format!(
                    "repository `{repository}` does not exist on {place}: Amazon ECR does not create repositories \
                     on push; create it first: `aws ecr create-repository --repository-name {repository}{region}`"
                )
            }
            Self::Gar { location } => match repository.split('/').collect::<Vec<_>>().as_slice() {
                [project, name, _image, ..] => format!(
                    "repository `{name}` does not exist in project `{project}` on {place}: Google Artifact Registry \
                     does not create repositories on push; create it first: `gcloud artifacts repositories create \
                     {name} --repository-format=docker --location={location} --project={project}`"
                ),
                _ => format!(
                    "`{repository}` is not a Google Artifact Registry path: images live at \
                     {place}/PROJECT/REPOSITORY/IMAGE, and the repository must be created first (`gcloud artifacts \
                     repositories create REPOSITORY --repository-format=docker --location={location}`)"
                ),
            },
            Self::GitLab => format!(
                "repository `{repository}` does not exist on {place}: on GitLab the project must exist first (its \
                 container repositories are created on push, at most two path levels below the project): create \
                 it in GitLab, or check the path"
            ),
            Self::Other => {
                let project = repository.split('/').next().unwrap_or_default();
                format!(
                    "repository `{repository}` does not exist on {place}: check the name. Registries that do not \
                     create repositories on push need it created first: on Amazon ECR, `aws ecr create-repository \
                     --repository-name {repository}`; on Google Artifact Registry, `gcloud artifacts repositories \
                     create`; on GitLab, the project; on Harbor, create the project `{project}` (hoist does so itself \
                     when it recognises Harbor)"
                )
            }
        }
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
    // Harbor's 401 for a missing project is about the project, not the credentials.
    if harbor_project_missing(codes) {
        return ErrorKind::NotFound;
    }
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

/// The codes and messages of a registry's `{"errors": […]}` body.
pub(crate) fn parse_error_body(body: &[u8]) -> Vec<ErrorCode> {
    hoist_http::error_entries(body).into_iter().map(|(code, message)| ErrorCode { code, message }).collect()
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
        assert!(hint.contains("aws ecr create-repository --repository-name team/app --region eu-west-1"), "{hint}");
        // Harbor's answer when the project is missing (older versions: a 404).
        let url = url::Url::parse("https://harbor.example/v2/library2/app/manifests/1").unwrap();
        let harbor = RegistryError::from_response(
            "push manifest",
            &url,
            404,
            br#"{"errors":[{"code":"NOT_FOUND","message":"project library2 not found"}]}"#,
        );
        assert!(harbor.hint().unwrap().contains("Harbor project `library2` does not exist"), "{:?}", harbor.hint());
        // Any other 404 keeps the general hint.
        let blob = RegistryError::from_response("read blob", &url, 404, br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#);
        assert!(blob.hint().unwrap().starts_with("check the repository name"), "{:?}", blob.hint());
        // A registry hoist does not recognise gets every way to create it.
        let url = url::Url::parse("https://registry.example:5000/v2/team/app/blobs/uploads/").unwrap();
        let other = RegistryError::from_response("push", &url, 404, br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#);
        let hint = other.hint().unwrap();
        assert!(hint.contains("`team/app` does not exist on registry.example:5000"), "{hint}");
        assert!(hint.contains("aws ecr create-repository --repository-name team/app"), "{hint}");
        assert!(hint.contains("create the project `team`"), "{hint}");
    }

    /// Harbor's `/v2` middleware answers a request into a missing project
    /// with 401 "project … not found" (src/server/middleware/v2auth/auth.go):
    /// a missing project, exit 5, never a credentials problem.
    #[test]
    fn harbors_401_for_a_missing_project_is_not_found() {
        let url = url::Url::parse("https://harbor.example/v2/team/app/blobs/uploads/").unwrap();
        let body =
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"project team not found: project team not found"}]}"#;
        let error = RegistryError::from_response("start a blob upload to team/app", &url, 401, body);
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(error.harbor_project_missing());
        let hint = error.hint().unwrap();
        assert!(hint.contains("the Harbor project `team` does not exist on harbor.example"), "{hint}");
        assert!(hint.contains("--no-create"), "{hint}");
        assert!(!hint.contains("password"), "{hint}");
        // Any other 401 stays a credentials problem.
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: team/app"}]}"#;
        assert_eq!(RegistryError::from_response("push", &url, 401, body).kind(), ErrorKind::Unauthorized);
    }

    #[test]
    fn google_artifact_registry_and_gitlab_say_what_must_exist_first() {
        let url = url::Url::parse("https://europe-west1-docker.pkg.dev/v2/my-proj/images/app/blobs/uploads/").unwrap();
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"Repository \"images\" not found"}]}"#;
        let hint = RegistryError::from_response("push", &url, 404, body).hint().unwrap();
        assert!(hint.contains("repository `images` does not exist in project `my-proj`"), "{hint}");
        assert!(
            hint.contains(
                "gcloud artifacts repositories create images --repository-format=docker --location=europe-west1 \
                 --project=my-proj"
            ),
            "{hint}"
        );
        let url = url::Url::parse("https://europe-west1-docker.pkg.dev/v2/my-proj/app/blobs/uploads/").unwrap();
        let hint = RegistryError::from_response("push", &url, 404, body).hint().unwrap();
        assert!(hint.contains("is not a Google Artifact Registry path"), "{hint}");

        let url = url::Url::parse("https://registry.gitlab.com/v2/group/project/app/blobs/uploads/").unwrap();
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        let hint = RegistryError::from_response("push", &url, 404, body).hint().unwrap();
        assert!(hint.contains("on GitLab the project must exist first"), "{hint}");
        // GitLab refuses a push into a project that does not exist as denied.
        let url = url::Url::parse("https://gitlab.example.com:5050/v2/group/project/app/blobs/uploads/").unwrap();
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let hint = RegistryError::from_response("push", &url, 403, body).hint().unwrap();
        assert!(hint.contains("On GitLab the project must exist first"), "{hint}");
        assert!(hint.contains("`group/project/app`"), "{hint}");
        // Elsewhere a denial keeps the general hint.
        let url = url::Url::parse("https://registry.example/v2/group/app/blobs/uploads/").unwrap();
        let hint = RegistryError::from_response("push", &url, 403, body).hint().unwrap();
        assert!(!hint.contains("GitLab"), "{hint}");
    }
}
