//! Projects: Harbor's namespace for repositories, the first component of a
//! repository path. Harbor creates repositories on push, but not projects:
//! a push into a project that does not exist is refused (with a 401 that
//! reads like a credentials problem), so the project must exist first.

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::client::{HarborClient, Payload, error_from};
use crate::{HarborError, HarborErrorKind};

/// The name Harbor's token service gives its registry in every `/v2/`
/// challenge (`src/core/service/token/creator.go`, `Registry`).
pub const HARBOR_TOKEN_SERVICE: &str = "harbor-registry";
/// The longest project name Harbor takes (`src/pkg/project/manager.go`).
const MAX_PROJECT_NAME: usize = 255;

/// Whether a registry's Bearer challenge names Harbor's token service: the
/// one sign of Harbor that costs nothing, since every push asks `/v2/`
/// first anyway.
pub fn is_harbor_service(service: Option<&str>) -> bool {
    service == Some(HARBOR_TOKEN_SERVICE)
}

/// The project `repository` (a path such as `team/app`) lives in: its first
/// component. A path of one component names no project on Harbor.
pub fn project_of<'a>(repository: &'a str, host: &str) -> Result<&'a str, HarborError> {
    match repository.split_once('/') {
        Some((project, _)) => Ok(project),
        None => Err(HarborError::new(HarborErrorKind::InvalidName, format!("push `{repository}` to Harbor at {host}"))
            .with_detail("it names no project: a Harbor repository is PROJECT/NAME")
            .with_hint(format!(
                "push to {host}/PROJECT/{repository}, in a project that exists or that hoist may create"
            ))),
    }
}

/// Harbor's rule for project names (`src/pkg/project/manager.go`
/// `validProjectName`): 1 to 255 characters of `[a-z0-9]+(?:[._-][a-z0-9]+)*`,
/// stricter than a repository path component (no `__`, no `--`).
pub fn check_project_name(name: &str) -> Result<(), HarborError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PROJECT_NAME
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if valid {
        return Ok(());
    }
    Err(HarborError::new(HarborErrorKind::InvalidName, format!("use `{name}` as a Harbor project"))
        .with_detail("Harbor refuses this name")
        .with_hint(
            "Harbor project names are 1 to 255 lower-case letters and digits, separated by single `.`, `_` or `-` \
             (`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`): choose another first path component",
        ))
}

/// What Harbor says about itself. Anonymous callers get the first four
/// fields only (`src/server/v2.0/handler/systeminfo.go` `convertInfo`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SystemInfo {
    #[serde(default)]
    pub auth_mode: Option<String>,
    #[serde(default)]
    pub primary_auth_mode: Option<bool>,
    #[serde(default)]
    pub self_registration: Option<bool>,
    #[serde(default)]
    pub harbor_version: Option<String>,
    /// `adminonly` or `everyone`.
    #[serde(default)]
    pub project_creation_restriction: Option<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// What to do about a project that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectPolicy {
    /// Create it (else it is an error naming it).
    pub create: bool,
    /// Create it public (anyone may pull) rather than private.
    pub public: bool,
}

impl Default for ProjectPolicy {
    fn default() -> Self {
        Self { create: true, public: false }
    }
}

/// What [`HarborClient::ensure_project`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// The project was there (or was made by someone else meanwhile).
    Existed,
    /// hoist created it.
    Created { public: bool },
}

#[derive(Deserialize)]
struct ListedProject {
    #[serde(default)]
    name: String,
}

impl HarborClient {
    /// `GET /api/v2.0/systeminfo` (anonymous callers may ask).
    pub async fn system_info(&self) -> Result<SystemInfo, HarborError> {
        let url = self.url("api/v2.0/systeminfo");
        let action = format!("read Harbor's system information at {}", self.host());
        let response = self.send(&action, Method::GET, &url, None).await?;
        if response.status() != StatusCode::OK {
            return Err(error_from(&action, &url, response).await);
        }
        self.read_json(&action, &url, response).await
    }

    /// Whether project `name` exists: `HEAD /api/v2.0/projects?project_name=`
    /// (exact, any project, needs a login: 200 or 404). An OIDC user's CLI
    /// secret is refused there (Harbor takes it only on the paths
    /// `src/server/middleware/security/oidc_cli.go` lists, `GET
    /// /api/v2.0/projects` among them), so a 401 with credentials asks the
    /// project list instead (fuzzy by name, matched exactly here).
    pub async fn project_exists(&self, name: &str) -> Result<bool, HarborError> {
        let mut url = self.url("api/v2.0/projects");
        url.query_pairs_mut().append_pair("project_name", name);
        let action = format!("check whether project `{name}` exists on {}", self.host());
        let response = self.send(&action, Method::HEAD, &url, None).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::UNAUTHORIZED if self.login().is_none() => {
                Err(error_from(&action, &url, response).await.with_hint(self.no_credentials_hint()))
            }
            StatusCode::UNAUTHORIZED => self.listed(name, &action).await,
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    /// Whether `name` is among the projects `GET /api/v2.0/projects?name=`
    /// lists (the ones this account can see).
    async fn listed(&self, name: &str, action: &str) -> Result<bool, HarborError> {
        let mut url = self.url("api/v2.0/projects");
        url.query_pairs_mut().append_pair("name", name).append_pair("page", "1").append_pair("page_size", "100");
        let response = self.send(action, Method::GET, &url, None).await?;
        match response.status() {
            StatusCode::OK => {
                let projects: Vec<ListedProject> = self.read_json(action, &url, response).await?;
                Ok(projects.iter().any(|p| p.name == name))
            }
            StatusCode::UNAUTHORIZED => Err(error_from(action, &url, response).await.with_hint(self.refused_hint())),
            _ => Err(error_from(action, &url, response).await),
        }
    }

    /// `POST /api/v2.0/projects`: creates project `name`, private unless
    /// `public` (metadata `public` is the string `"true"`/`"false"`). A
    /// project that exists already (409) is no failure.
    pub async fn create_project(&self, name: &str, public: bool) -> Result<Ensured, HarborError> {
        let url = self.url("api/v2.0/projects");
        let action = format!("create project `{name}` on {}", self.host());
        let body = serde_json::json!({
            "project_name": name,
            "metadata": { "public": if public { "true" } else { "false" } },
        });
        let payload = Payload::Json(body.to_string().into_bytes());
        let response = self.send(&action, Method::POST, &url, Some(payload)).await?;
        match response.status() {
            StatusCode::CREATED => Ok(Ensured::Created { public }),
            StatusCode::CONFLICT => Ok(Ensured::Existed),
            StatusCode::FORBIDDEN => {
                let error = error_from(&action, &url, response).await.with_kind(HarborErrorKind::CreationRestricted);
                let robot = error.messages().iter().any(|m| m.message.contains("system level robot"));
                let hint = if robot {
                    format!(
                        "a robot account of one project cannot create projects: ask a Harbor administrator to create \
                         project `{name}`, use a system-level robot account, or push to a project that exists"
                    )
                } else {
                    format!(
                        "creating projects on {} is restricted to administrators: ask a Harbor administrator to \
                         create project `{name}`, or push to a project that exists",
                        self.host()
                    )
                };
                Err(error.with_hint(hint))
            }
            StatusCode::UNAUTHORIZED => Err(error_from(&action, &url, response).await.with_hint(self.refused_hint())),
            StatusCode::BAD_REQUEST => {
                let error = error_from(&action, &url, response).await;
                let about_name = error.messages().iter().any(|m| m.message.to_ascii_lowercase().contains("name"));
                Err(if about_name { error.with_kind(HarborErrorKind::InvalidName) } else { error })
            }
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    /// Makes sure project `name` exists before anything is pushed into it:
    /// an existing one is left alone; a missing one is created as `policy`
    /// says, or is an error naming it.
    pub async fn ensure_project(&self, name: &str, policy: ProjectPolicy) -> Result<Ensured, HarborError> {
        check_project_name(name)?;
        if self.project_exists(name).await? {
            tracing::debug!(project = name, host = self.host(), "the Harbor project exists");
            return Ok(Ensured::Existed);
        }
        if !policy.create {
            return Err(HarborError::new(
                HarborErrorKind::ProjectMissing,
                format!("push into project `{name}` on {}", self.host()),
            )
            .with_detail("it does not exist, and creating it is turned off (--no-create)")
            .with_hint(format!(
                "create project `{name}` in Harbor first, or leave out --no-create and hoist creates it (private; \
                 public with --public)"
            )));
        }
        self.create_project(name, policy.public).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_harbors_rule() {
        for good in ["team", "a", "team-a", "team.a_b-c", "0day", &"x".repeat(255)] {
            assert!(check_project_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Team", "team--a", "team__a", "-team", "team.", "te am", "tëam", &"x".repeat(256)] {
            let error = check_project_name(bad).unwrap_err();
            assert_eq!(error.kind(), HarborErrorKind::InvalidName, "{bad}");
        }
    }

    #[test]
    fn a_repository_lives_in_its_first_component() {
        assert_eq!(project_of("team/app", "h").unwrap(), "team");
        assert_eq!(project_of("team/sub/app", "h").unwrap(), "team");
        let error = project_of("app", "harbor.example").unwrap_err();
        assert_eq!(error.kind(), HarborErrorKind::InvalidName);
        assert!(error.hint().unwrap().contains("harbor.example/PROJECT/app"), "{:?}", error.hint());
    }

    #[test]
    fn harbor_is_told_by_its_token_service_name() {
        assert!(is_harbor_service(Some("harbor-registry")));
        assert!(!is_harbor_service(Some("registry.docker.io")));
        assert!(!is_harbor_service(None));
    }
}
