//! `hoist push` through the fault proxy in front of a real registry: each
//! fault a real network or registry front end produces, pushed through and
//! checked with skopeo against the registry itself. The recovery faults run
//! against every way in (a file, standard input, a gzip-wrapped file): the
//! streamed pushes use the same upload engine as file pushes, and must pass
//! the same matrix.

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, gzip, incompressible_layer, layer_tar};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry, tools};

use crate::support::{hoist, hoist_stdin, path_str, run};

/// A way in: a seekable file, or a stream read once.
#[derive(Clone, Copy, Debug)]
enum Input {
    File,
    Stdin,
    Gzip,
}

const EVERY_INPUT: [Input; 3] = [Input::File, Input::Stdin, Input::Gzip];

/// An image with a small layer and an incompressible one of `big` bytes.
fn image(big: usize) -> ImageFixture {
    ImageFixture::new()
        .tag("app:1.0")
        .layer(layer_tar(&[("etc/os-release", b"ID=hoist\n")]))
        .layer(incompressible_layer(7, big))
}

struct Setup {
    registry: TestRegistry,
    proxy: FaultProxy,
    archive: std::path::PathBuf,
    fixture: ImageFixture,
    dir: tempfile::TempDir,
}

fn setup(big: usize, rules: Vec<Rule>) -> Setup {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), rules);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let fixture = image(big);
    DockerSaveClassic::new().image(fixture.clone()).write_to(&archive);
    Setup { registry, proxy, archive, fixture, dir }
}

impl Setup {
    /// Pushes the file through the proxy with `extra` flags; returns stdout+stderr.
    fn push(&self, repository: &str, extra: &[&str]) -> String {
        self.push_as(Input::File, repository, extra)
    }

    /// Pushes through the proxy, the archive coming in as `input`.
    fn push_as(&self, input: Input, repository: &str, extra: &[&str]) -> String {
        let dest = format!("{}/{repository}:1.0", self.proxy.host());
        let result = match input {
            Input::File => run(hoist().args(["push", "--no-cache", path_str(&self.archive), &dest]).args(extra)),
            Input::Stdin => {
                let args: Vec<&str> =
                    ["push", "--no-cache", "-", &dest].into_iter().chain(extra.iter().copied()).collect();
                hoist_stdin(&args, std::fs::read(&self.archive).unwrap(), None)
            }
            Input::Gzip => {
                let wrapped = self.dir.path().join("app.tar.gz");
                std::fs::write(&wrapped, gzip(&std::fs::read(&self.archive).unwrap())).unwrap();
                run(hoist().args(["push", "--no-cache", path_str(&wrapped), &dest]).args(extra))
            }
        };
        assert_eq!(result.code, 0, "{input:?}: {}", result.stderr);
        format!("{}{}", result.stdout, result.stderr)
    }

    /// skopeo copies the image from the registry itself (no proxy),
    /// verifying every digest, and each layer unpacks to its diff_id.
    fn assert_intact(&self, repository: &str) {
        let reference = format!("{}/{repository}:1.0", self.registry.host());
        let dir = tempfile::tempdir().unwrap();
        tools::skopeo_copy_to_dir(&reference, dir.path());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), self.fixture.layers.len());
        for (layer, diff_id) in layers.iter().zip(self.fixture.diff_ids()) {
            let blob = dir.path().join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
            assert_eq!(tools::gunzip_sha256(&blob), diff_id);
        }
    }
}

#[test]
fn gateway_errors_are_retried() {
    for input in EVERY_INPUT {
        let setup = setup(
            300_000,
            // On blob requests: the `/v2/` check before a push is retried too, but is not the point here.
            vec![
                Rule::first(2, Fault::Status(502)).path("/blobs/"),
                Rule::first(1, Fault::Status(503)).path("/blobs/"),
                Rule::first(1, Fault::Status(504)).path("/blobs/"),
            ],
        );
        setup.push_as(input, "app", &[]);
        let statuses: Vec<u16> = setup.proxy.faulted().iter().map(|l| l.status).collect();
        assert_eq!(statuses, [502, 502, 503, 504]);
        setup.assert_intact("app");
    }
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    for input in EVERY_INPUT {
        let setup =
            setup(300_000, vec![Rule::first(2, Fault::TooManyRequests { retry_after: "1".into() }).method("POST")]);
        setup.push_as(input, "app", &[]);
        assert_eq!(setup.proxy.faulted().len(), 2);
        setup.assert_intact("app");
    }
}

#[test]
fn a_connection_dropped_mid_body_is_resumed() {
    for input in EVERY_INPUT {
        // The first streamed PATCH breaks after 512 KiB: the layer is compressed again and re-sent.
        let setup = setup(3 << 20, vec![Rule::first(1, Fault::DropBodyAfter(512 * 1024)).method("PATCH")]);
        setup.push_as(input, "app", &[]);
        assert_eq!(setup.proxy.faulted().len(), 1, "{input:?}");
        setup.assert_intact("app");
    }
}

#[test]
fn a_chunk_dropped_mid_body_resumes_at_the_registrys_offset() {
    for input in EVERY_INPUT {
        let setup = setup(3 << 20, vec![Rule::first(1, Fault::DropBodyAfter(100_000)).method("PATCH").skip(2)]);
        setup.push_as(input, "app", &["--chunk-size", "1MiB", "--jobs", "1"]);
        let log = setup.proxy.log();
        let dropped = log.iter().position(|l| l.status == 0).expect("one request was dropped");
        assert_eq!(log[dropped + 1].method, "GET", "asks where the upload stands");
        let start = |range: &str| range.split('-').next().unwrap().parse::<u64>().unwrap();
        let lost = start(log[dropped].content_range.as_deref().unwrap());
        let resumed = start(log[dropped + 2].content_range.as_deref().unwrap());
        assert!(lost > 0, "a chunk after the first was dropped");
        assert_eq!(resumed, lost, "resumes at the dropped chunk, keeping what the registry has");
        setup.assert_intact("app");
    }
}

#[test]
fn a_body_size_limit_falls_back_to_chunks() {
    for input in EVERY_INPUT {
        let limit = 1 << 20;
        let setup = setup(3 << 20, vec![Rule::always(Fault::TooLarge { above: limit })]);
        setup.push_as(input, "app", &[]);
        let log = setup.proxy.log();
        assert!(log.iter().any(|l| l.status == 413), "the limit was hit");
        let accepted: Vec<_> = log.iter().filter(|l| l.method == "PATCH" && l.status == 202).collect();
        assert!(accepted.iter().all(|l| l.body_len <= limit), "{accepted:?}");
        assert!(accepted.iter().filter(|l| l.content_range.is_some()).count() >= 3, "the big layer went in chunks");
        setup.assert_intact("app");
    }
}

#[test]
fn ecr_style_201_with_a_stale_range_is_trusted_by_bytes_sent() {
    for input in EVERY_INPUT {
        let setup = setup(3 << 20, vec![Rule::always(Fault::StaleRange201).method("PATCH")]);
        setup.push_as(input, "app", &["--chunk-size", "1MiB"]);
        assert!(setup.proxy.faulted().len() >= 3, "every chunk got a stale Range");
        setup.assert_intact("app");
    }
}

#[test]
fn ghcr_style_416_above_4mib_shrinks_the_chunks() {
    for input in EVERY_INPUT {
        let setup = setup(9 << 20, vec![Rule::always(Fault::ChunkCap { max: 4 << 20 })]);
        setup.push_as(input, "app", &["--chunk-size", "8MiB"]);
        let log = setup.proxy.log();
        assert_eq!(log.iter().filter(|l| l.status == 416).count(), 1, "one refusal, then 4 MiB chunks");
        assert!(log.iter().filter(|l| l.method == "PATCH" && l.status == 202).all(|l| l.body_len <= 4 << 20));
        setup.assert_intact("app");
    }
}

/// A failure late in a long upload is recovered from: the retry budget
/// (four times `--timeout`) counts from the last progress, not from the
/// upload's start.
#[test]
fn a_failure_late_in_a_long_upload_still_resumes() {
    for input in [Input::File, Input::Stdin] {
        let rules = vec![
            // The tenth chunk breaks, about 5 s in: past a budget counted from the start.
            Rule::first(1, Fault::DropBodyAfter(1000)).method("PATCH").skip(9),
            Rule::always(Fault::Delay { ms: 500 }).method("PATCH"),
        ];
        let setup = setup(3 << 20, rules);
        setup.push_as(input, "app", &["--timeout", "1", "--chunk-size", "256KiB", "--jobs", "1"]);
        assert!(setup.proxy.log().iter().any(|l| l.status == 0), "{input:?}: one chunk was dropped");
        setup.assert_intact("app");
    }
}

/// The registry commits a blob but its answer is lost: a HEAD finds the
/// blob, and the commit is never sent again.
#[test]
fn a_lost_commit_answer_is_checked_with_a_head_not_resent() {
    for input in EVERY_INPUT {
        let commit = Rule::first(1, Fault::LoseAnswer).method("PUT").path("/blobs/uploads/");
        let setup = setup(1 << 20, vec![commit]);
        setup.push_as(input, "app", &[]);
        let log = setup.proxy.log();
        let lost = log.iter().find(|l| l.fault.is_some()).expect("an answer was lost");
        let digest = lost.query.split('&').find(|p| p.starts_with("digest=")).unwrap().to_owned();
        let commits = log.iter().filter(|l| l.method == "PUT" && l.query.contains(&digest)).count();
        assert_eq!(commits, 1, "{input:?}: the commit was sent once");
        // The next request about that blob (others may run meanwhile) asks whether it is there.
        let hex = digest.rsplit("%3A").next().unwrap();
        let at = log.iter().position(|l| l.fault.is_some()).unwrap();
        let next = log[at + 1..].iter().find(|l| l.path.contains(hex)).expect("a request about the blob");
        assert_eq!(next.method, "HEAD", "{input:?}: a HEAD asks whether it is there");
        setup.assert_intact("app");
    }
}

#[test]
fn a_blob_already_there_costs_one_head() {
    let setup = setup(300_000, vec![]);
    let dest = format!("{}/app:1.0", setup.proxy.host());
    // With the cache, the second push knows every digest before compressing.
    run(hoist().args(["push", path_str(&setup.archive), &dest])).success();
    let before = setup.proxy.log().len();
    run(hoist().args(["push", path_str(&setup.archive), &dest])).success();
    let second = &setup.proxy.log()[before..];
    let blob_requests: Vec<_> = second.iter().filter(|l| l.path.contains("/blobs/")).collect();
    assert_eq!(blob_requests.len(), 3, "two layers and the config: {blob_requests:?}");
    assert!(blob_requests.iter().all(|l| l.method == "HEAD"));
}

#[test]
fn a_mount_costs_one_post() {
    let setup = setup(300_000, vec![]);
    for repository in ["first", "second"] {
        let dest = format!("{}/{repository}:1.0", setup.proxy.host());
        run(hoist().args(["push", path_str(&setup.archive), &dest])).success();
    }
    let mounts: Vec<_> = setup
        .proxy
        .log()
        .into_iter()
        .filter(|l| l.method == "POST" && l.path == "/v2/second/blobs/uploads/" && l.query.contains("mount="))
        .collect();
    assert_eq!(mounts.len(), 2, "one POST per layer: {mounts:?}");
    assert!(mounts.iter().all(|l| l.status == 201 && l.query.contains("from=first")), "{mounts:?}");
    assert_eq!(setup.proxy.count("PATCH", "/v2/second/"), 0, "no layer bytes were sent again");
    setup.assert_intact("second");
}

#[test]
fn debug_logs_show_no_upload_state() {
    let setup = setup(
        3 << 20,
        vec![
            Rule::first(1, Fault::DropBodyAfter(100_000)).method("PATCH").skip(1),
            Rule::first(1, Fault::Status(503)).method("PUT"),
        ],
    );
    let printed = setup.push("app", &["-v", "-v", "--chunk-size", "1MiB"]);
    assert!(printed.contains("_state=REDACTED"), "the debug log shows upload URLs: {printed}");
    let states = setup.proxy.upload_states();
    assert!(states.len() > 3, "the registry handed out upload states");
    for state in states {
        assert!(!printed.contains(&state), "an upload _state leaked into the output");
    }
    setup.assert_intact("app");
}

#[test]
fn registry_warnings_are_shown_once_and_change_nothing() {
    let text = "this repository will be archived on 2027-01-01";
    let setup = setup(
        300_000,
        vec![Rule::always(Fault::AddHeader { name: "Warning".into(), value: format!(r#"299 - "{text}""#) })],
    );
    let printed = setup.push("app", &[]);
    assert!(setup.proxy.faulted().len() > 5, "every answer carried the warning");
    assert_eq!(printed.matches(text).count(), 1, "shown once: {printed}");
    setup.assert_intact("app");
}

#[test]
fn an_unknown_repository_says_how_to_create_it() {
    // ECR's answer to a push into a repository nobody created.
    let setup = setup(
        300_000,
        vec![
            Rule::always(Fault::ErrorCode {
                status: 404,
                code: "NAME_UNKNOWN".into(),
                message: "The repository with name 'team/app' does not exist in the registry with id '123456789012'"
                    .into(),
            })
            .method("POST"),
        ],
    );
    let dest = format!("{}/team/app:1.0", setup.proxy.host());
    let result = run(hoist().args(["push", "--no-cache", path_str(&setup.archive), &dest]));
    result.fails_with(5, "NAME_UNKNOWN");
    let hint = result.stderr.lines().find(|l| l.starts_with("hint: ")).unwrap();
    assert!(hint.contains(&format!("`team/app` does not exist on {}", setup.proxy.host())), "{hint}");
    assert!(hint.contains("aws ecr create-repository --repository-name team/app"), "{hint}");
    assert!(hint.contains("create the project `team`"), "{hint}");
    assert_eq!(setup.proxy.count("PUT", "/manifests/"), 0, "no tag was written");
}

/// A manifest the registry refuses (here a proxy answering its PUT with
/// MANIFEST_INVALID, as a registry with a policy would) is exit 8, and the
/// tag does not exist.
#[test]
fn a_refused_manifest_is_exit_8_and_moves_no_tag() {
    let setup = setup(
        300_000,
        vec![
            Rule::always(Fault::ErrorCode {
                status: 400,
                code: "MANIFEST_INVALID".into(),
                message: "manifest invalid: refused by policy".into(),
            })
            .method("PUT")
            .path("/manifests/"),
        ],
    );
    let dest = format!("{}/team/app:1.0", setup.proxy.host());
    let result = run(hoist().args(["push", "--no-cache", path_str(&setup.archive), &dest]));
    result.fails_with(8, "MANIFEST_INVALID");
    assert!(result.stderr.contains("hint: the registry refused the manifest"), "{}", result.stderr);
    let (status, _) = setup.registry.get("/v2/team/app/manifests/1.0");
    assert_eq!(status, 404, "no tag was put");
}
