//! The Harbor client against the testkit's Harbor stand-in (which follows
//! Harbor 2.x's source: see `hoist_testkit::harbor`).

use hoist_harbor::{Ensured, HarborClient, HarborErrorKind, Login, LoginMode, ProjectPolicy};
use hoist_http::{Secret, Transport, TransportOptions};
use hoist_testkit::harbor::{ADMIN, DEVELOPER, HarborConfig, PROJECT_ROBOT, SYSTEM_ROBOT, TestHarbor};

fn login(account: (&str, &str), mode: LoginMode) -> Login {
    Login { username: account.0.to_owned(), password: Secret::new(account.1), source: "the test".into(), mode }
}

fn client(harbor: &TestHarbor, login: Option<Login>) -> HarborClient {
    let transport = Transport::new(TransportOptions::default()).unwrap();
    HarborClient::for_registry(&transport, &harbor.host(), login).unwrap()
}

const CREATE: ProjectPolicy = ProjectPolicy { create: true, public: false };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_project_is_left_alone_and_a_missing_one_created_private() {
    let harbor = TestHarbor::start();
    let developer = client(&harbor, Some(login(DEVELOPER, LoginMode::Basic)));
    assert_eq!(developer.ensure_project("library", CREATE).await.unwrap(), Ensured::Existed);
    assert_eq!(harbor.count("POST", "/api/v2.0/projects"), 0, "an existing project is not created again");

    assert_eq!(developer.ensure_project("team", CREATE).await.unwrap(), Ensured::Created { public: false });
    let team = harbor.project("team").expect("the project was made");
    assert!(!team.public);
    assert_eq!(team.owner, DEVELOPER.0);
    // Basic on a cookie-less client: no session, no CSRF token, and none needed.
    let api: Vec<_> = harbor.log().into_iter().filter(|l| l.path.starts_with("/api/")).collect();
    assert!(api.iter().all(|l| l.auth.as_deref() == Some("Basic") && !l.session && !l.csrf_header), "{api:#?}");
    assert_eq!(
        api.iter().map(|l| (l.method.as_str(), l.status)).collect::<Vec<_>>(),
        [("HEAD", 200), ("HEAD", 404), ("POST", 201)]
    );

    assert_eq!(developer.ensure_project("team", CREATE).await.unwrap(), Ensured::Existed);
    let public = ProjectPolicy { create: true, public: true };
    assert_eq!(developer.ensure_project("open", public).await.unwrap(), Ensured::Created { public: true });
    assert!(harbor.project("open").unwrap().public);
    // Someone else made it between the check and the creation: a 409 is success.
    assert_eq!(developer.create_project("open", false).await.unwrap(), Ensured::Existed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_create_fails_naming_the_project_and_makes_nothing() {
    let harbor = TestHarbor::start();
    let developer = client(&harbor, Some(login(DEVELOPER, LoginMode::Basic)));
    let error = developer.ensure_project("team", ProjectPolicy { create: false, public: false }).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::ProjectMissing);
    assert!(error.to_string().contains("project `team`"), "{error}");
    assert!(error.to_string().contains(&harbor.host()), "{error}");
    assert!(error.hint().unwrap().contains("--no-create"), "{:?}", error.hint());
    assert_eq!(harbor.count("POST", "/api/v2.0/projects"), 0);
    assert!(harbor.project("team").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_creation_is_for_administrators_others_are_told_so() {
    let harbor = TestHarbor::start_with(HarborConfig::default().admin_only());
    let error =
        client(&harbor, Some(login(DEVELOPER, LoginMode::Basic))).ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::CreationRestricted);
    assert!(error.to_string().contains("create project `team`"), "{error}");
    assert!(error.to_string().contains("Only system admin can create project"), "{error}");
    let hint = error.hint().unwrap();
    assert!(hint.contains("restricted to administrators") && hint.contains("project `team`"), "{hint}");
    assert!(harbor.project("team").is_none());

    // A robot of one project may never create one; a system-level robot may.
    let error =
        client(&harbor, Some(login(PROJECT_ROBOT, LoginMode::Basic))).ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::CreationRestricted);
    assert!(error.hint().unwrap().contains("system-level robot"), "{:?}", error.hint());
    let robot = client(&harbor, Some(login(SYSTEM_ROBOT, LoginMode::Basic)));
    assert_eq!(robot.ensure_project("built", CREATE).await.unwrap(), Ensured::Created { public: false });
    assert_eq!(harbor.project("built").unwrap().owner, ADMIN.0, "a robot's project belongs to the administrator");
    // The same refusal through a cookie session (a 403 that is no CSRF refusal).
    let session = client(&harbor, Some(login(DEVELOPER, LoginMode::Session)));
    let error = session.ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::CreationRestricted, "{error}");
    assert!(error.hint().unwrap().contains("restricted to administrators"), "{:?}", error.hint());
    let admin = client(&harbor, Some(login(ADMIN, LoginMode::Basic)));
    assert_eq!(admin.ensure_project("team", CREATE).await.unwrap(), Ensured::Created { public: false });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_missing_credentials_are_auth_errors_and_names_are_checked_first() {
    let harbor = TestHarbor::start();
    let wrong = client(&harbor, Some(login((DEVELOPER.0, "not-the-password"), LoginMode::Basic)));
    let error = wrong.ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::Unauthorized, "{error}");
    assert!(error.hint().unwrap().contains("refused the credentials from the test"), "{:?}", error.hint());
    let error = client(&harbor, None).ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::Unauthorized, "{error}");
    assert!(error.hint().unwrap().contains("hoist login"), "{:?}", error.hint());
    assert!(harbor.project("team").is_none());

    let before = harbor.log().len();
    let error = client(&harbor, Some(login(DEVELOPER, LoginMode::Basic))).ensure_project("Team__X", CREATE).await;
    assert_eq!(error.unwrap_err().kind(), HarborErrorKind::InvalidName);
    assert_eq!(harbor.log().len(), before, "no request for a name Harbor refuses");
}

/// The web UI's way in: `POST /c/login` is refused once for its missing
/// CSRF token, then opens a session; the POST that creates the project
/// carries the session cookie and the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_session_logs_in_and_sends_the_csrf_token() {
    let harbor = TestHarbor::start();
    let session = client(&harbor, Some(login(DEVELOPER, LoginMode::Session)));
    assert_eq!(session.ensure_project("team", CREATE).await.unwrap(), Ensured::Created { public: false });
    let log = harbor.log();
    let steps: Vec<_> = log.iter().map(|l| (l.method.as_str(), l.path.as_str(), l.status)).collect();
    assert_eq!(
        steps,
        [
            ("POST", "/c/login", 403),
            ("POST", "/c/login", 200),
            ("HEAD", "/api/v2.0/projects", 404),
            ("POST", "/api/v2.0/projects", 201)
        ]
    );
    assert!(log[1].csrf_header && log[1].session);
    assert!(log[2..].iter().all(|l| l.session && l.auth.is_none()), "{log:#?}");
    assert!(log[3].csrf_header);
    assert_eq!(harbor.project("team").unwrap().owner, DEVELOPER.0);

    let wrong = client(&harbor, Some(login((DEVELOPER.0, "nope"), LoginMode::Session)));
    let error = wrong.ensure_project("team", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::Unauthorized);
    assert!(error.hint().unwrap().contains("refused the login of `developer`"), "{:?}", error.hint());
}

/// What the stand-in does to a client that keeps Harbor's `sid` cookie and
/// knows nothing of CSRF: its POSTs are refused (why hoist's Basic client
/// keeps no cookies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_cookie_without_the_csrf_token_is_refused() {
    let harbor = TestHarbor::start();
    let _ = Transport::new(TransportOptions::default()).unwrap(); // installs the crypto provider
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v2.0/projects", harbor.host());
    let head = http.head(format!("{url}?project_name=library")).basic_auth(ADMIN.0, Some(ADMIN.1));
    let head = head.send().await.unwrap();
    assert_eq!(head.status(), 200);
    let sid = head.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(sid.starts_with("sid="), "beego sets a session cookie on every answer: {sid}");
    let body = r#"{"project_name":"team","metadata":{"public":"false"}}"#;
    let post = http.post(&url).basic_auth(ADMIN.0, Some(ADMIN.1)).header("cookie", &sid).body(body);
    let post = post.header("content-type", "application/json").send().await.unwrap();
    assert_eq!(post.status(), 403);
    assert!(post.headers().contains_key("x-harbor-csrf-token"));
    assert!(post.text().await.unwrap().contains("CSRF token not found in request"));
    let post = http.post(&url).basic_auth(ADMIN.0, Some(ADMIN.1)).body(body);
    assert_eq!(post.header("content-type", "application/json").send().await.unwrap().status(), 201);
}

/// An OIDC user's CLI secret: refused on `HEAD /api/v2.0/projects`, so the
/// project list answers whether it exists; creating is allowed. A session
/// cannot come from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_cli_secret_works_where_harbor_takes_it() {
    let harbor = TestHarbor::start_with(HarborConfig::default().oidc());
    let developer = client(&harbor, Some(login(DEVELOPER, LoginMode::Basic)));
    assert_eq!(developer.ensure_project("library", CREATE).await.unwrap(), Ensured::Existed);
    assert_eq!(developer.ensure_project("team", CREATE).await.unwrap(), Ensured::Created { public: false });
    assert!(harbor.count("GET", "/api/v2.0/projects") >= 2, "{:#?}", harbor.log());
    let error =
        client(&harbor, Some(login(DEVELOPER, LoginMode::Session))).ensure_project("x", CREATE).await.unwrap_err();
    assert_eq!(error.kind(), HarborErrorKind::Unauthorized);
    assert!(error.hint().unwrap().contains("OIDC"), "{:?}", error.hint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_info_tells_more_to_those_logged_in() {
    let harbor = TestHarbor::start_with(HarborConfig::default().admin_only());
    let anonymous = client(&harbor, None).system_info().await.unwrap();
    assert_eq!(anonymous.auth_mode.as_deref(), Some("db_auth"));
    assert!(anonymous.harbor_version.is_none() && anonymous.project_creation_restriction.is_none());
    let admin = client(&harbor, Some(login(ADMIN, LoginMode::Basic))).system_info().await.unwrap();
    assert_eq!(admin.project_creation_restriction.as_deref(), Some("adminonly"));
    assert!(admin.harbor_version.is_some());
}
