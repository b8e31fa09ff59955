//! `hoist push` to Harbor: the testkit's Harbor stand-in (Harbor 2.x's
//! core as its source has it: see `hoist_testkit::harbor`) in front of a
//! real distribution registry. Projects that do not exist are created
//! before the first blob; `--no-create` and accounts that may not create
//! projects fail naming the project, with nothing pushed; skopeo, logged
//! in, reads back what was pushed through the stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::harbor::{ADMIN, DEVELOPER, HarborConfig, PROJECT_ROBOT, SYSTEM_ROBOT, TestHarbor};

use crate::support::{Run, copy_and_check_as, hoist, path_str, run, with_input, with_stdin};

/// An archive and an empty credential world, so the machine's own logins
/// never reach a test.
pub(crate) struct Scene {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) archive: PathBuf,
    pub(crate) image: ImageFixture,
}

impl Scene {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("app.tar");
        let image = ImageFixture::new()
            .tag("app:1.0")
            .layer(layer_tar(&[("etc/motd", b"pushed to harbor\n")]))
            .layer(incompressible_layer(7, 200_000));
        DockerSaveClassic::new().image(image.clone()).write_to(&archive);
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Self { dir, archive, image }
    }

    pub(crate) fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }

    /// `hoist ARGS…` with the scene's credential files, its own blob cache, and nothing inherited.
    pub(crate) fn hoist(&self, args: &[&str]) -> Command {
        let mut command = hoist();
        command
            .args(args)
            .env_remove("HOIST_USERNAME")
            .env_remove("HOIST_PASSWORD")
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("no-auth.json"))
            .env("HOIST_CERTS_D", self.dir.path().join("no-certs.d"))
            .env("HOIST_CACHE_DIR", self.dir.path().join("cache"));
        command
    }

    /// `hoist push ARCHIVE DEST ARGS…` as `account`.
    pub(crate) fn push_as(&self, account: (&str, &str), dest: &str, args: &[&str]) -> Run {
        let mut all = vec!["push", path_str(&self.archive), dest, "--username", account.0, "--password-stdin"];
        all.extend_from_slice(args);
        with_stdin(&mut self.hoist(&all), account.1)
    }
}

fn admin_creds() -> String {
    format!("{}:{}", ADMIN.0, ADMIN.1)
}

/// Nothing went into the registry: no blob upload or manifest request
/// reached Harbor, and the registry behind it stores nothing.
fn nothing_pushed(harbor: &TestHarbor) {
    let writes: Vec<_> = harbor
        .log()
        .into_iter()
        .filter(|l| l.path.starts_with("/v2/") && l.method != "GET" && l.method != "HEAD")
        .collect();
    assert!(writes.is_empty(), "requests that write: {writes:#?}");
    assert_eq!(harbor.registry().blob_count(), 0, "the registry holds nothing");
}

#[test]
fn a_push_into_a_new_project_creates_it_private_then_pushes() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let dest = format!("{}/team/app:1.0", harbor.host());
    let result = scene.push_as(DEVELOPER, &dest, &[]);
    result.success();
    let line = format!("created project `team` on {} (private)", harbor.host());
    assert!(result.stderr.contains(&line), "{}", result.stderr);
    let team = harbor.project("team").expect("the project exists");
    assert!(!team.public);
    assert_eq!(team.owner, DEVELOPER.0);
    // The project was made before anything went to the registry.
    let log = harbor.log();
    let created = log.iter().position(|l| l.method == "POST" && l.path == "/api/v2.0/projects").unwrap();
    let first_write =
        log.iter().position(|l| l.path.starts_with("/v2/team/") && l.method != "HEAD" && l.method != "GET");
    assert!(first_write.is_some_and(|w| w > created), "{log:#?}");
    copy_and_check_as(&dest, &scene.image, Some(&admin_creds()));

    // Pushed again, into the same project: not created again.
    let before = harbor.count("POST", "/api/v2.0/projects");
    scene.push_as(DEVELOPER, &format!("{}/team/other:2", harbor.host()), &[]).success();
    assert_eq!(harbor.count("POST", "/api/v2.0/projects"), before, "an existing project is left alone");
}

#[test]
fn an_existing_project_is_left_alone() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let dest = format!("{}/library/app:1.0", harbor.host());
    let result = scene.push_as(ADMIN, &dest, &[]);
    result.success();
    assert!(!result.stderr.contains("created project"), "{}", result.stderr);
    assert_eq!(harbor.count("POST", "/api/v2.0/projects"), 0);
    assert_eq!(harbor.count("HEAD", "/api/v2.0/projects"), 1, "one existence check");
    copy_and_check_as(&dest, &scene.image, Some(&admin_creds()));
}

#[test]
fn public_projects_on_request_and_what_was_made_in_json() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let dest = format!("{}/open/app:1.0", harbor.host());
    let result = scene.push_as(DEVELOPER, &dest, &["--public", "--output", "json", "--progress", "json"]);
    result.success();
    assert!(harbor.project("open").unwrap().public);
    let summary: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    let created = serde_json::json!([{ "registry": harbor.host(), "kind": "project", "name": "open", "public": true }]);
    assert_eq!(summary["created"], created);
    let event = result
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "created")
        .expect("a created event");
    assert_eq!(event["name"], "open");
    assert_eq!(event["public"], true);
    // Anyone may pull from a public project: skopeo without credentials.
    hoist_testkit::tools::skopeo_inspect(&dest);
}

#[test]
fn no_create_fails_naming_the_project_before_any_blob() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let dest = format!("{}/team/app:1.0", harbor.host());
    let result = scene.push_as(DEVELOPER, &dest, &["--no-create"]);
    result.fails_with(5, "project `team`");
    assert!(result.stderr.contains("does not exist"), "{}", result.stderr);
    assert!(result.stderr.contains("hint: create project `team` in Harbor first"), "{}", result.stderr);
    assert!(harbor.project("team").is_none());
    assert_eq!(harbor.count("POST", "/api/v2.0/projects"), 0);
    nothing_pushed(&harbor);
    // Into a project that exists, --no-create changes nothing.
    scene.push_as(ADMIN, &format!("{}/library/app:1.0", harbor.host()), &["--no-create"]).success();
}

#[test]
fn a_user_who_may_not_create_projects_is_told_so_and_nothing_is_pushed() {
    let harbor = TestHarbor::start_with(HarborConfig::default().admin_only());
    let scene = Scene::new();
    let dest = format!("{}/team/app:1.0", harbor.host());
    let result = scene.push_as(DEVELOPER, &dest, &[]);
    result.fails_with(4, "create project `team`");
    assert!(result.stderr.contains("Only system admin can create project"), "{}", result.stderr);
    let hint = result.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains("restricted to administrators") && hint.contains("ask a Harbor administrator"), "{hint}");
    assert!(hint.contains("project `team`"), "{hint}");
    assert!(harbor.project("team").is_none());
    // A project's robot cannot create one either, whatever the restriction.
    let result = scene.push_as(PROJECT_ROBOT, &dest, &[]);
    result.fails_with(4, "Only system level robot can create project");
    assert!(result.stderr.contains("system-level robot account"), "{}", result.stderr);
    nothing_pushed(&harbor);

    // Those who may: a system-level robot (its projects belong to the administrator), and the administrator.
    scene.push_as(SYSTEM_ROBOT, &format!("{}/ci/app:1.0", harbor.host()), &[]).success();
    assert_eq!(harbor.project("ci").unwrap().owner, ADMIN.0);
    scene.push_as(ADMIN, &dest, &[]).success();
    copy_and_check_as(&dest, &scene.image, Some(&admin_creds()));
}

#[test]
fn standard_input_and_repotags_get_their_projects_too() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    // A stream held in upload sessions in its DEST: the project must exist before the first byte is read.
    let dest = format!("{}/streamed/app:1.0", harbor.host());
    let archive = std::fs::read(&scene.archive).unwrap();
    let mut command = scene.hoist(&["push", "-", &dest, "--username", DEVELOPER.0]);
    let result = with_input(command.env("HOIST_PASSWORD", DEVELOPER.1), archive);
    result.success();
    assert!(result.stderr.contains("created project `streamed`"), "{}", result.stderr);
    copy_and_check_as(&dest, &scene.image, Some(&admin_creds()));
    // RepoTags re-homed into a project that does not exist: made once the archive names them.
    let run = run(scene
        .hoist(&["push", path_str(&scene.archive), "--registry", &format!("{}/rehomed", harbor.host())])
        .env("HOIST_USERNAME", DEVELOPER.0)
        .env("HOIST_PASSWORD", DEVELOPER.1));
    run.success();
    assert!(run.stderr.contains("created project `rehomed`"), "{}", run.stderr);
    copy_and_check_as(&format!("{}/rehomed/app:1.0", harbor.host()), &scene.image, Some(&admin_creds()));
}

#[test]
fn a_repository_outside_any_project_is_a_usage_error() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let result = scene.push_as(DEVELOPER, &format!("{}/app:1.0", harbor.host()), &[]);
    result.fails_with(2, "names no project");
    assert!(result.stderr.contains(&format!("{}/PROJECT/app", harbor.host())), "{}", result.stderr);
    nothing_pushed(&harbor);
}

/// Harbor's 401 "project … not found" is about the project: a pull from a
/// project that does not exist is exit 5 with a hint naming it, not a
/// credentials problem.
#[test]
fn harbors_401_for_a_missing_project_is_reported_as_missing() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let out = scene.dir.path().join("out.tar");
    let result = with_stdin(
        &mut scene.hoist(&[
            "pull",
            &format!("{}/nowhere/app:1.0", harbor.host()),
            path_str(&out),
            "--username",
            DEVELOPER.0,
            "--password-stdin",
        ]),
        DEVELOPER.1,
    );
    result.fails_with(5, "project nowhere not found");
    let hint = result.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains("the Harbor project `nowhere` does not exist"), "{hint}");
    assert!(!hint.contains("password") && !hint.contains("credentials from"), "{hint}");
}

/// A layer the blob cache saw in another project is mounted from there;
/// when Harbor refuses the mount (the account cannot read that project, or
/// it was deleted), the layer is uploaded instead and the push succeeds.
#[test]
fn a_mount_harbor_refuses_becomes_an_upload() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    scene.push_as(ADMIN, &format!("{}/alpha/app:1.0", harbor.host()), &[]).success();
    // developer is no member of alpha, which is private.
    let beta = format!("{}/beta/app:1.0", harbor.host());
    let result = scene.push_as(DEVELOPER, &beta, &[]);
    result.success();
    let mounts: Vec<_> =
        harbor.log().into_iter().filter(|l| l.path.starts_with("/v2/beta/") && l.query.contains("mount=")).collect();
    assert!(!mounts.is_empty(), "the cache offered a mount");
    assert!(mounts.iter().all(|l| l.status == 401), "{mounts:#?}");
    copy_and_check_as(&beta, &scene.image, Some(&admin_creds()));

    // The mount's source project is gone: Harbor says "project gone not found".
    let scene = Scene::new();
    scene.push_as(ADMIN, &format!("{}/gone/app:1.0", harbor.host()), &[]).success();
    harbor.delete_project("gone");
    let gamma = format!("{}/gamma/app:1.0", harbor.host());
    scene.push_as(ADMIN, &gamma, &[]).success();
    assert!(
        harbor
            .log()
            .iter()
            .any(|l| l.path.starts_with("/v2/gamma/") && l.query.contains("from=gone") && l.status == 401),
        "a mount from the deleted project was tried and refused"
    );
    copy_and_check_as(&gamma, &scene.image, Some(&admin_creds()));
}

/// The web UI's way in, where Basic on the API is not wanted.
#[test]
fn a_cookie_session_on_request() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let dest = format!("{}/team/app:1.0", harbor.host());
    scene.push_as(DEVELOPER, &dest, &["--harbor-session"]).success();
    assert!(harbor.project("team").is_some());
    let create = harbor.log().into_iter().find(|l| l.method == "POST" && l.path == "/api/v2.0/projects").unwrap();
    assert!(create.session && create.csrf_header && create.auth.is_none(), "{create:#?}");
    assert_eq!(harbor.count("POST", "/c/login"), 2, "refused once for want of a CSRF token, then logged in");
}

/// Debug logging of everything, through Basic and session logins: neither
/// password, nor any token, session id or CSRF value Harbor handed out,
/// appears in the output.
#[test]
fn secrets_never_appear_in_debug_output_with_harbor() {
    let harbor = TestHarbor::start();
    let scene = Scene::new();
    let basic = scene.push_as(DEVELOPER, &format!("{}/one/app:1.0", harbor.host()), &["-v", "-v"]);
    basic.success();
    let session = scene.push_as(ADMIN, &format!("{}/two/app:1.0", harbor.host()), &["-v", "-v", "--harbor-session"]);
    session.success();
    let refused = scene.push_as((DEVELOPER.0, "Wrong-pass-9"), &format!("{}/three/app:1", harbor.host()), &["-vv"]);
    refused.fails_with(4, "");
    let mut secrets = harbor.secrets();
    assert!(secrets.len() > 5, "tokens, session ids and CSRF tokens were handed out");
    secrets.extend([DEVELOPER.1.to_owned(), ADMIN.1.to_owned(), "Wrong-pass-9".to_owned()]);
    for run in [&basic, &session, &refused] {
        assert!(run.stderr.contains("debug: "), "debug logging is on");
        let text = format!("{}{}", run.stdout, run.stderr);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret leaked:\n{text}");
        }
    }
}

/// docker's config.json, parsed.
pub(crate) fn read_config(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A copy into Harbor gets its project made as a push does (and refused
/// with `--no-create`, before any blob).
#[test]
fn a_copy_into_a_new_project_creates_it() {
    let harbor = TestHarbor::start();
    let source = hoist_testkit::TestRegistry::start();
    let scene = Scene::new();
    let from = format!("{}/app:1.0", source.host());
    run(&mut scene.hoist(&["push", "-q", path_str(&scene.archive), &from])).success();
    let copy = |project: &str, extra: &[&str]| {
        let dest = format!("{}/{project}/app:1.0", harbor.host());
        let mut args = vec!["copy", "--dest-username", DEVELOPER.0, "--dest-password-stdin", &from, &dest];
        args.extend_from_slice(extra);
        (with_stdin(&mut scene.hoist(&args), DEVELOPER.1), dest)
    };
    let (refused, _) = copy("kept-out", &["--no-create"]);
    refused.fails_with(5, "kept-out");
    assert!(harbor.project("kept-out").is_none(), "no project was made");
    nothing_pushed(&harbor);

    let (copied, dest) = copy("copies", &[]);
    copied.success();
    assert!(copied.stderr.contains("created project `copies`"), "{}", copied.stderr);
    assert!(harbor.project("copies").is_some());
    copy_and_check_as(&dest, &scene.image, Some(&admin_creds()));
}
