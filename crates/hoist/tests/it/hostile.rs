//! A registry that lies, stalls and floods, put in front of the real one by
//! the fault proxy: hoist stays bounded in memory and time, gives up with
//! the exit code and message of the real cause, never reuses what it has not
//! proven, and moves no tag it did not mean to.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer, layer_tar};
use hoist_testkit::{Fault, FaultProxy, IssuerConfig, Rule, TestRegistry, TokenIssuer};

use crate::support::{copy_and_check, hoist, path_str, run, run_measured};

/// Peak memory a push of these small images may reach, whatever the registry
/// sends (a default push of a 1.2 GiB archive peaks near 33 MiB).
const MEMORY_BOUND_MIB: u64 = 100;

fn image(seed: u64) -> ImageFixture {
    ImageFixture::new()
        .tag("app:1.0")
        .layer(layer_tar(&[("etc/hostile", format!("seed {seed}\n").as_bytes())]))
        .layer(incompressible_layer(seed, 400_000))
}

struct Setup {
    registry: TestRegistry,
    archive: std::path::PathBuf,
    fixture: ImageFixture,
    dir: tempfile::TempDir,
}

fn setup(seed: u64) -> Setup {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let fixture = image(seed);
    DockerSaveClassic::new().image(fixture.clone()).write_to(&archive);
    Setup { registry, archive, fixture, dir }
}

impl Setup {
    fn push(&self, dest: &str, extra: &[&str]) -> crate::support::Measured {
        run_measured(hoist().args(["push", "--no-cache", path_str(&self.archive), dest]).args(extra))
    }
}

#[test]
fn endless_error_bodies_cost_neither_memory_nor_time() {
    let setup = setup(1);
    let cases = [
        // A refused manifest whose error never ends: refused, not retried.
        (Rule::always(Fault::EndlessBody { status: 400 }).method("PUT").path("/manifests/"), 8),
        // A failing registry whose error never ends: retried within the budget, then given up.
        (Rule::always(Fault::EndlessBody { status: 503 }).method("POST"), 6),
    ];
    for (rule, code) in cases {
        let proxy = FaultProxy::start(setup.registry.port(), vec![rule]);
        let dest = format!("{}/app:1.0", proxy.host());
        let measured = setup.push(&dest, &["--timeout", "2"]);
        measured.run.fails_with(code, "");
        assert!(measured.peak_mib < MEMORY_BOUND_MIB, "peak {} MiB for exit {code}", measured.peak_mib);
        assert!(measured.seconds < 60.0, "took {:.1} s for exit {code}", measured.seconds);
    }
    let (status, _) = setup.registry.get("/v2/app/manifests/1.0");
    assert_eq!(status, 404, "no tag moved");
}

#[test]
fn an_endless_answer_from_the_token_server_is_cut_off() {
    let issuer = TokenIssuer::start(IssuerConfig::default().user("alice", "s3cret"));
    let issuer_port: u16 = issuer.realm().rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let realm_proxy = FaultProxy::start(issuer_port, vec![Rule::always(Fault::EndlessBody { status: 401 })]);
    let registry =
        TestRegistry::builder().token_auth_with_realm(&issuer, &format!("http://{}/token", realm_proxy.host())).start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    DockerSaveClassic::new().image(image(2)).write_to(&archive);
    let dest = format!("{}/app:1.0", registry.host());
    let mut command = hoist();
    command.args(["push", "--no-cache", "--timeout", "2", "--username", "alice", path_str(&archive), &dest]);
    let measured = run_measured(command.env("HOIST_PASSWORD", "s3cret"));
    measured.run.fails_with(4, "token");
    assert!(!measured.run.stderr.contains("s3cret"), "{}", measured.run.stderr);
    assert!(measured.peak_mib < MEMORY_BOUND_MIB, "peak {} MiB", measured.peak_mib);
    assert!(measured.seconds < 30.0, "took {:.1} s", measured.seconds);
}

#[test]
fn a_trickling_error_body_is_read_for_seconds_not_forever() {
    let setup = setup(3);
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![Rule::always(Fault::TrickleBody { status: 400, every_ms: 100 }).method("PUT").path("/manifests/")],
    );
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &[]);
    measured.run.fails_with(8, "HTTP 400");
    assert!(measured.seconds < 20.0, "took {:.1} s", measured.seconds);
}

/// A registry that accepts connections and never answers: each request is
/// given `--timeout` without progress, one request is retried for at most
/// four times that, and the optional lookup of the existing tag is tried once.
#[test]
fn a_registry_that_never_answers_is_given_up_on_in_bounded_time() {
    let setup = setup(4);
    let proxy = FaultProxy::start(setup.registry.port(), vec![Rule::always(Fault::Stall)]);
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &["--timeout", "2"]);
    measured.run.fails_with(6, "no progress for 2 s");
    assert!(measured.run.stderr.contains("raise `--timeout`"), "{}", measured.run.stderr);
    assert!(measured.seconds < 20.0, "took {:.1} s", measured.seconds);
}

#[test]
fn a_stalled_lookup_of_the_existing_tag_does_not_stall_the_push() {
    let setup = setup(5);
    let proxy =
        FaultProxy::start(setup.registry.port(), vec![Rule::always(Fault::Stall).method("GET").path("/manifests/")]);
    let dest = format!("{}/app:1.0", proxy.host());
    let measured = setup.push(&dest, &["--timeout", "3"]);
    measured.run.success();
    assert_eq!(proxy.count("GET", "/manifests/"), 1, "the lookup is tried once");
    assert!(measured.seconds < 15.0, "took {:.1} s", measured.seconds);
    copy_and_check(&format!("{}/app:1.0", setup.registry.host()), &setup.fixture);
}

#[test]
fn a_retry_after_longer_than_hoist_waits_gives_up_at_once() {
    let setup = setup(6);
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![Rule::always(Fault::TooManyRequests { retry_after: "600".into() }).method("POST")],
    );
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &[]);
    measured.run.fails_with(6, "the registry asked to wait 600 s");
    assert!(measured.seconds < 10.0, "took {:.1} s", measured.seconds);
}

/// An answer HTTP cannot parse fails the same way every time: one request,
/// a protocol error (exit 9), no retries.
#[test]
fn an_answer_whose_head_is_too_large_is_not_retried() {
    let setup = setup(7);
    let huge = "x".repeat(1 << 20);
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![
            Rule::always(Fault::Serve {
                status: 202,
                headers: vec![("x-padding".into(), huge)],
                body: Vec::new().into(),
            })
            .method("POST"),
        ],
    );
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &["--jobs", "1"]);
    measured.run.fails_with(9, "");
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 1, "not retried");
}

#[test]
fn an_upload_answered_without_a_location_is_a_protocol_error() {
    let setup = setup(8);
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![Rule::always(Fault::RemoveHeader { name: "Location".into() }).method("POST")],
    );
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &[]);
    measured.run.fails_with(9, "no Location header");
    assert!(measured.run.stderr.contains("hint: the registry answered in a way hoist does not expect"));
}

/// A front end that reports another digest for the manifest than its bytes
/// hash to: a digest mismatch (exit 7), named.
#[test]
fn a_registry_reporting_another_digest_is_a_mismatch() {
    let setup = setup(15);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![
            Rule::always(Fault::SetHeader { name: "Docker-Content-Digest".into(), value: wrong.clone() })
                .method("PUT")
                .path("/manifests/"),
        ],
    );
    let measured = setup.push(&format!("{}/app:1.0", proxy.host()), &[]);
    measured.run.fails_with(7, &wrong);
}

/// Someone who can push to the tag pairs its image's config with other
/// blobs. The next push must not take the pairing on trust: it proves each
/// learned blob by hashing its content, finds the lie, and pushes the
/// layers; the tag ends up on a correct image.
#[test]
fn a_poisoned_tag_ends_with_a_correct_image() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (victim, other) = (image(10), image(11));
    let (victim_tar, other_tar) = (dir.path().join("victim.tar"), dir.path().join("other.tar"));
    DockerSaveClassic::new().image(victim.clone()).write_to(&victim_tar);
    DockerSaveClassic::new().image(other.clone()).write_to(&other_tar);
    let tag = format!("{}/app:1.0", registry.host());
    for (archive, dest) in [(&victim_tar, &tag), (&other_tar, &format!("{}/app:other", registry.host()))] {
        run(hoist().args(["push", "--no-cache", "-q", path_str(archive), dest])).success();
    }
    // The victim's config, the other image's layers, under the victim's tag.
    let (_, other_manifest) = registry.get("/v2/app/manifests/other");
    let (_, victim_manifest) = registry.get("/v2/app/manifests/1.0");
    let mut poisoned: serde_json::Value = serde_json::from_slice(&other_manifest).unwrap();
    let victim_manifest: serde_json::Value = serde_json::from_slice(&victim_manifest).unwrap();
    poisoned["config"] = victim_manifest["config"].clone();
    let media_type = poisoned["mediaType"].as_str().unwrap().to_owned();
    let (status, _) = registry.put("/v2/app/manifests/1.0", &media_type, &serde_json::to_vec(&poisoned).unwrap());
    assert_eq!(status, 201, "the poisoned manifest went in");

    let again = run(hoist().args(["push", "--no-cache", "--progress", "plain", path_str(&victim_tar), &tag]));
    again.success();
    assert!(again.stderr.contains("claims layer") && again.stderr.contains("but it is not"), "{}", again.stderr);
    copy_and_check(&tag, &victim);
}

/// A cache entry whose size the registry contradicts is dropped, and the
/// layer pushed as usual.
#[test]
fn a_cache_entry_the_registry_contradicts_is_dropped() {
    let setup = setup(12);
    let cache = setup.dir.path().join("cache");
    let dest = format!("{}/app:1.0", setup.registry.host());
    let push = |extra: &[&str]| {
        run(hoist().args(["push", "--cache-dir", path_str(&cache), path_str(&setup.archive), &dest]).args(extra))
    };
    push(&["-q"]).success();
    let file = cache.join("blobs.json");
    let mut document: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for entry in document["blobs"].as_object_mut().unwrap().values_mut() {
        entry["size"] = serde_json::json!(entry["size"].as_u64().unwrap() + 1);
    }
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let again = push(&["--progress", "plain"]);
    again.success();
    assert!(again.stderr.contains("disagrees with the registry"), "{}", again.stderr);
    let pushed = copy_and_check(&dest, &setup.fixture);
    let real: Vec<u64> =
        pushed.manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).collect();
    let healed: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for entry in healed["blobs"].as_object().unwrap().values() {
        assert!(
            real.contains(&entry["size"].as_u64().unwrap()),
            "the cache holds the registry's sizes again: {healed}"
        );
    }
}

/// Two destinations, the second refusing its manifest: the first is
/// published and listed on stdout (and in `--output json`), the error names
/// the second, and its tag does not exist.
#[test]
fn a_partly_failed_push_lists_what_was_published_and_names_what_was_not() {
    let setup = setup(13);
    let proxy = FaultProxy::start(
        setup.registry.port(),
        vec![
            Rule::always(Fault::ErrorCode { status: 400, code: "TAG_INVALID".into(), message: "immutable".into() })
                .method("PUT")
                .path("/manifests/"),
        ],
    );
    let first = format!("{}/first:1.0", setup.registry.host());
    let second = format!("{}/second:1.0", proxy.host());
    let text = run(hoist().args(["push", "--no-cache", "-q", path_str(&setup.archive), &first, &second]));
    assert_eq!(text.code, 8, "{}", text.stderr);
    assert!(
        text.stdout.starts_with(&format!("{first}@sha256:")) && text.stdout.lines().count() == 1,
        "{}",
        text.stdout
    );
    let error = text.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(error.contains(&format!("not published: {second}")), "{error}");
    let json =
        run(hoist().args(["push", "--no-cache", "-q", "--output", "json", path_str(&setup.archive), &first, &second]));
    assert_eq!(json.code, 8);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(document["images"][0]["reference"], first);
    assert_eq!(document["not_published"], serde_json::json!([second]));
    assert!(document["error"]["message"].as_str().unwrap().contains("TAG_INVALID"));
    let (status, _) = setup.registry.get("/v2/second/manifests/1.0");
    assert_eq!(status, 404);
}

/// One upload fails for good while another holds an open session: the other
/// session is cancelled, not left for the registry to expire.
#[test]
fn a_failed_upload_cancels_the_sessions_of_the_others() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let fixture = ImageFixture::new()
        .tag("app:1")
        .layer(incompressible_layer(20, 2_000_000))
        .layer(incompressible_layer(21, 2_000_000));
    DockerSaveClassic::new().image(fixture).write_to(&archive);
    // The first PATCH hangs (its session stays open); the second is refused.
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            Rule::first(1, Fault::Stall).method("PATCH"),
            Rule::first(1, Fault::ErrorCode { status: 400, code: "DENIED".into(), message: "no".into() })
                .method("PATCH"),
        ],
    );
    let dest = format!("{}/app:1", proxy.host());
    let result = run(hoist().args(["push", "--no-cache", "--jobs", "2", path_str(&archive), &dest]));
    assert_ne!(result.code, 0, "{}", result.stderr);
    assert_eq!(registry.open_uploads(), 0, "every session was cancelled: {:?}", proxy.log());
    assert!(proxy.count("DELETE", "/blobs/uploads/") >= 1, "{:?}", proxy.log());
}
