//! A small client for Harbor's REST API (`/api/v2.0`), for what a push
//! needs from Harbor beyond the registry protocol: the project it goes into
//! must exist first.
//!
//! - [`HarborClient`]: one Harbor, spoken to through hoist-http's
//!   [`hoist_http::Transport`] (the same TLS trust, `certs.d`, proxies,
//!   retries, bounds and redaction as the registry client), logged in with
//!   Basic auth on a cookie-less client (no CSRF token needed), or with the
//!   web UI's cookie session and CSRF token where a deployment needs it
//!   ([`LoginMode`]);
//! - projects ([`HarborClient::ensure_project`]): `HEAD
//!   /api/v2.0/projects?project_name=` to learn whether one exists, `POST
//!   /api/v2.0/projects` to create it (private unless asked), 409 taken as
//!   success, 403 (creation restricted to administrators, or a robot of one
//!   project) an error naming the project;
//! - recognising Harbor at no cost: [`is_harbor_service`] reads the
//!   `service` of the registry's `/v2/` challenge, which every push asks
//!   for anyway; [`HarborClient::system_info`] asks Harbor itself.
//!
//! Every failure is a [`HarborError`] with a kind the binary maps to its
//! exit codes, and a hint. The library never prints; passwords, session
//! cookies and CSRF tokens are [`hoist_http::Secret`]s, never logged.
//!
//! Facts about Harbor's behaviour, with their sources in goharbor/harbor,
//! are in the comments where they are used, and in hoist-testkit's Harbor
//! stand-in, which the tests run against.

mod client;
mod error;
mod project;

pub use client::{HarborClient, Login, LoginMode};
pub use error::{ApiMessage, HarborError, HarborErrorKind};
pub use project::{
    Ensured, HARBOR_TOKEN_SERVICE, ProjectPolicy, SystemInfo, check_project_name, is_harbor_service, project_of,
};
