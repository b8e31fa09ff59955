//! `hoist copy` between real registries: every document must arrive byte
//! for byte (skopeo reads the raw manifests back and verifies every blob),
//! Docker must pull and run what was copied, blobs move the cheapest way
//! (mounted inside one registry, skipped when present, streamed otherwise,
//! never a cross-registry mount), and each side gets its own credentials.
//!
//! Source content is what no tool here writes, put by hand-written HTTP
//! (`pull.rs`): a Docker v2 manifest, an OCI manifest with zstd layers, an
//! OCI index with an arm64 image and an attestation, a Docker manifest list,
//! an image with no layers.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use hoist_testkit::{Fault, FaultProxy, IssuerConfig, Rule, TestRegistry, TokenIssuer, sha256, tools};
use serde_json::{Value, json};

use crate::pull::{hand_written, http, put_blob, put_manifest, run_in_docker, runnable};
use crate::support::{Run, hoist, hoist_run, run};

fn copy(args: &[&str]) -> Run {
    hoist_run(&[&["copy"][..], args].concat())
}

/// The manifest `reference` names, as the registry serves it (skopeo, no credentials).
fn raw(reference: &str) -> Vec<u8> {
    tools::skopeo_raw_manifest(reference)
}

/// `skopeo copy --all docker://REF dir:…`: reads every manifest and blob of
/// `reference` (every platform of an index) and verifies every digest.
fn skopeo_verifies(reference: &str, creds: Option<&str>) {
    tools::require("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("skopeo");
    command.args(["copy", "--all", "--src-tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--src-creds", creds]);
    }
    tools::run_ok(command.args([&format!("docker://{reference}"), &format!("dir:{}", dir.path().display())]));
}

/// The `--output json` summary's blobs of image 0: (digest, action, bytes_sent).
fn blob_actions(summary: &Value) -> Vec<(String, String, u64)> {
    summary["images"][0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_owned(),
                b["action"].as_str().unwrap().to_owned(),
                b["bytes_sent"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn json_copy(args: &[&str]) -> Value {
    let out = copy(&[&["--output", "json"][..], args].concat());
    serde_json::from_str(&out.success().stdout).unwrap()
}

/// `docker pull` of a loopback reference, then `docker run --pull never`; removes it.
fn docker_pulls_and_runs(reference: &str, motd: &str, config: Option<&Path>) {
    tools::require_docker();
    let mut pull = Command::new("docker");
    if let Some(config) = config {
        pull.arg("--config").arg(config);
    }
    tools::run_ok(pull.args(["pull", "-q", reference]));
    assert_eq!(run_in_docker(reference), motd, "{reference} runs");
}

/// Each hand-written kind of image copies to another registry with its
/// digest: the same bytes for every manifest, every index child by digest,
/// zstd layers still zstd; skopeo verifies every blob and Docker pulls and
/// runs each (zstd aside: Docker 20.10 cannot pull it). A second copy finds
/// every blob present.
#[test]
fn every_kind_of_image_copies_with_its_digest() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let seeded = hand_written(&from);
    for (repository, motd, _) in &seeded.images {
        let source = format!("{}/{repository}:1", from.host());
        let destination = format!("{}/copied/{}:2", to.host(), repository.trim_start_matches("hand/"));
        let summary = json_copy(&[&source, &destination]);
        let original = raw(&source);
        let digest = sha256(&original);
        assert_eq!(summary["images"][0]["digest"], digest.as_str(), "{source}: the digest is kept");
        assert_eq!(summary["images"][0]["reference"], destination.as_str());
        assert_eq!(raw(&destination), original, "{destination}: the same bytes");
        let actions = blob_actions(&summary);
        assert!(actions.iter().all(|(_, action, _)| action == "uploaded"), "{repository}: {actions:?}");
        if *repository == "hand/zstd" {
            let manifest: Value = serde_json::from_slice(&raw(&destination)).unwrap();
            assert!(
                manifest["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd"))
            );
        }
        skopeo_verifies(&destination, None);
        let again = json_copy(&[&source, &destination]);
        assert!(blob_actions(&again).iter().all(|(_, a, sent)| a == "existed" && *sent == 0), "{again}");
        if let Some(motd) = motd.as_ref().filter(|_| *repository != "hand/zstd") {
            docker_pulls_and_runs(&destination, motd, None);
        }
    }
    // Every child of the index and its attestation, by digest.
    let index_copy = format!("{}/copied/index", to.host());
    for entry in &seeded.index_entries {
        let child = format!("{index_copy}@{}", entry["digest"].as_str().unwrap());
        assert_eq!(sha256(&raw(&child)), entry["digest"].as_str().unwrap(), "{child}");
    }
    assert_eq!(sha256(&raw(&format!("{index_copy}:2"))), seeded.index["digest"].as_str().unwrap());
}

/// Inside one registry every blob is mounted from the source repository:
/// nothing is downloaded or sent. Copied again, every blob is there.
#[test]
fn a_copy_within_one_registry_mounts_every_blob() {
    let registry = TestRegistry::start();
    let seeded = hand_written(&registry);
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let source = format!("{}/hand/index:1", proxy.host());
    let destination = format!("{}/mirror/index:1", proxy.host());
    let summary = json_copy(&[&source, &destination]);
    assert_eq!(summary["images"][0]["digest"], seeded.index["digest"]);
    let actions = blob_actions(&summary);
    assert_eq!(actions.len(), 7, "3 configs and 4 layers (two images share their base): {actions:?}");
    assert!(actions.iter().all(|(_, action, sent)| action == "mounted" && *sent == 0), "{actions:?}");
    let log = proxy.log();
    assert!(!log.iter().any(|l| l.method == "GET" && l.path.contains("/blobs/")), "no blob is downloaded");
    assert!(!log.iter().any(|l| l.method == "PATCH" || (l.method == "PUT" && l.path.contains("/blobs/"))));
    let mounts = log.iter().filter(|l| l.method == "POST" && l.query.contains("mount=")).count();
    assert_eq!(mounts, 7, "one mount per blob");
    assert!(log.iter().filter(|l| l.query.contains("mount=")).all(|l| l.query.contains("from=hand%2Findex")));
    skopeo_verifies(&destination, None);
    let again = json_copy(&[&source, &destination]);
    assert!(blob_actions(&again).iter().all(|(_, action, _)| action == "existed"));

    // A refused mount (401, as Harbor answers for a project the account
    // cannot read) falls back to an upload streamed from the source.
    let refusing = FaultProxy::start(
        registry.port(),
        vec![
            Rule::first(
                1,
                Fault::ErrorCode { status: 401, code: "UNAUTHORIZED".into(), message: "project hand not found".into() },
            )
            .method("POST")
            .path("/blobs/uploads/"),
        ],
    );
    let refused = format!("{}/refused/index:1", refusing.host());
    let summary = json_copy(&[&format!("{}/hand/index:1", refusing.host()), &refused]);
    let mut actions: Vec<String> = blob_actions(&summary).into_iter().map(|(_, action, _)| action).collect();
    actions.sort();
    assert_eq!(actions, ["mounted", "mounted", "mounted", "mounted", "mounted", "mounted", "uploaded"]);
    assert!(refusing.faulted()[0].query.contains("mount="), "the refused request was a mount");
    skopeo_verifies(&refused, None);
}

/// Across registries no mount is ever attempted (Docker Hub and Harbor
/// answer a foreign `from` badly): blobs the destination has cost a HEAD,
/// the others stream from the source.
#[test]
fn across_registries_present_blobs_are_skipped_and_nothing_is_mounted() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    hand_written(&from);
    let destination = FaultProxy::start(to.port(), vec![]);
    let docker = format!("{}/hand/docker:1", from.host());
    // The Docker v2 image first; then the list, whose image shares its base layer.
    let first = json_copy(&[&docker, &format!("{}/prod/app:1", destination.host())]);
    assert!(blob_actions(&first).iter().all(|(_, action, _)| action == "uploaded"));
    let list = json_copy(&[&format!("{}/hand/list:1", from.host()), &format!("{}/prod/app:list", destination.host())]);
    let actions = blob_actions(&list);
    let base = &blob_actions(&first)[..];
    for (digest, action, _) in &actions {
        let expected = if base.iter().any(|(d, _, _)| d == digest) { "existed" } else { "uploaded" };
        assert_eq!(action, expected, "{digest}: {actions:?}");
    }
    assert!(actions.iter().any(|(_, a, _)| a == "existed"), "the shared busybox layer: {actions:?}");
    assert!(!destination.log().iter().any(|l| l.query.contains("mount=")), "no cross-registry mount");
}

/// `--platform` copies the chosen child of an index, its digest kept; one
/// the index lacks is an error listing those it has; a single image must
/// be the platform asked for.
#[test]
fn platform_copies_the_chosen_child() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let seeded = hand_written(&from);
    let index = format!("{}/hand/index:1", from.host());
    let arm = format!("{}/arm/app:1", to.host());
    let summary = json_copy(&["--platform", "linux/arm64", &index, &arm]);
    let arm_entry = &seeded.index_entries[1];
    assert_eq!(summary["images"][0]["digest"], arm_entry["digest"]);
    assert_eq!(sha256(&raw(&arm)), arm_entry["digest"].as_str().unwrap());
    skopeo_verifies(&arm, None);
    let missing = copy(&["--platform", "linux/s390x", &index, &format!("{}/none/app:1", to.host())]);
    missing.fails_with(5, "has no image for linux/s390x; it has linux/arm64/v8, linux/amd64");
    let docker = format!("{}/hand/docker:1", from.host());
    copy(&["--platform", "linux/amd64", &docker, &format!("{}/amd/app:1", to.host())]).success();
    copy(&["--platform", "linux/arm64", &docker, &format!("{}/none/app:1", to.host())])
        .fails_with(5, "has no image for linux/arm64");
    let (status, _) = to.get("/v2/none/app/manifests/1");
    assert_eq!(status, 404, "no tag moved");
}

/// A token-auth registry to a basic-auth one, with the credentials for both
/// in one docker config: every hand-written image keeps its digest, and the
/// source is asked for pull only. Docker, given
/// the same config, pulls and runs the result. Per-side flags win over the
/// config; a refused one is named in the hint; two passwords cannot both
/// come from standard input.
#[test]
fn token_to_basic_with_one_docker_config_naming_both_hosts() {
    use base64::Engine as _;
    let anonymous = TestRegistry::start();
    let seeded = hand_written(&anonymous);
    let issuer = TokenIssuer::start(IssuerConfig::default().user("reader", "r3ad"));
    let token = TestRegistry::builder().token_auth(&issuer).start();
    let basic = TestRegistry::builder().basic_auth("writer", "wr1te").start();
    // skopeo puts every hand-written image into the token registry, digests preserved.
    for (repository, _, _) in &seeded.images {
        tools::run_ok(Command::new("skopeo").args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            "reader:r3ad",
            &format!("docker://{}/{repository}:1", anonymous.host()),
            &format!("docker://{}/{repository}:1", token.host()),
        ]));
    }
    let dir = tempfile::tempdir().unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = json!({"auths": {
        token.host(): {"auth": b64("reader:r3ad")},
        basic.host(): {"auth": b64("writer:wr1te")},
    }});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let with_config = |config: &Path, args: &[&str]| -> Run {
        run(hoist()
            .arg("copy")
            .args(args)
            .env("DOCKER_CONFIG", config)
            .env("REGISTRY_AUTH_FILE", config.join("no-auth.json"))
            .env_remove("HOIST_USERNAME")
            .env_remove("HOIST_PASSWORD"))
    };
    for (repository, _, _) in &seeded.images {
        let source = format!("{}/{repository}:1", token.host());
        let destination = format!("{}/prod/{}:1", basic.host(), repository.trim_start_matches("hand/"));
        let digest = sha256(&raw(&format!("{}/{repository}:1", anonymous.host())));
        let issued_before = issuer.issued().len();
        let out = with_config(dir.path(), &[&source, &destination]);
        assert_eq!(out.success().stdout.trim(), format!("{destination}@{digest}"), "{repository}: the digest is kept");
        let scopes: Vec<String> = issuer.issued()[issued_before..].iter().map(|i| i.scopes.clone()).collect();
        let pull_only = format!("repository:{repository}:pull");
        assert!(!scopes.is_empty() && scopes.iter().all(|s| *s == pull_only), "{scopes:?}");
        skopeo_verifies(&destination, Some("writer:wr1te"));
    }
    let source = format!("{}/hand/index:1", token.host());
    let destination = format!("{}/prod/index:1", basic.host());
    let motd = seeded.images.iter().find(|(r, _, _)| *r == "hand/index").unwrap().1.clone().unwrap();
    docker_pulls_and_runs(&destination, &motd, Some(dir.path()));

    // Per-side flags, with nothing in the docker config.
    let flagged = format!("{}/prod/flags:1", basic.host());
    let out = run(hoist()
        .args(["copy", "--src-creds", "reader:r3ad", "--dest-username", "writer", &source, &flagged])
        .env("DOCKER_CONFIG", empty.path())
        .env("REGISTRY_AUTH_FILE", empty.path().join("none.json"))
        .env("HOIST_DEST_PASSWORD", "wr1te"));
    out.success();
    assert!(out.stderr.contains("visible to other users"), "{}", out.stderr);
    // A refused destination password names the flags it came from.
    let wrong = empty.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = run(hoist()
        .args(["copy", "--dest-username", "writer", "--dest-password-file"])
        .arg(&wrong)
        .args([&source, &flagged])
        .env("DOCKER_CONFIG", dir.path())
        .env("REGISTRY_AUTH_FILE", empty.path().join("none.json")));
    out.fails_with(4, "prod/flags");
    assert!(out.stderr.contains("--dest-creds/--dest-username/HOIST_DEST_USERNAME"), "{}", out.stderr);
    let mut child = hoist()
        .args(["copy", "--src-username", "a", "--src-password-stdin", "--dest-username", "b", "--dest-password-stdin"])
        .args([&source, &flagged])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x\ny\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let both = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    both.fails_with(2, "only one password can come from standard input");
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An image in `repository` with what cosign and SBOM tools attach to it,
/// as a registry without the referrers API holds them.
struct Signed {
    image: Value,
    /// A signature whose config media type names it (cosign's OCI 1.1 form) and an SBOM with
    /// `artifactType`: both name the image as `subject`; listed under the tag schema.
    signature: Value,
    sbom: Value,
    /// The tag-schema index `sha256-<image hex>` listing both.
    schema_index: Value,
    /// cosign's own tag `sha256-<image hex>.sig` and the manifest it names.
    legacy_tag: String,
    legacy: Value,
}

impl Signed {
    fn hex(&self) -> String {
        self.image["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned()
    }
}

/// A manifest put by its digest; returns its descriptor.
fn put_by_digest(registry: &TestRegistry, repository: &str, document: &Value) -> Value {
    let digest = sha256(&serde_json::to_vec_pretty(document).unwrap());
    put_manifest(registry, repository, &digest, OCI_MANIFEST, document)
}

/// With `cosign_tag`, also cosign's classic `sha256-<hex>.sig` tag.
fn signed(registry: &TestRegistry, repository: &str, cosign_tag: bool) -> Signed {
    let fixture = runnable("signed\n");
    let manifest = crate::pull::hand_image(
        registry,
        repository,
        &fixture,
        true,
        hoist_testkit::fixtures::gzip,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let image = put_manifest(registry, repository, "1", OCI_MANIFEST, &manifest);
    let subject = image.clone();
    let mut empty = put_blob(registry, repository, b"{}");
    empty["mediaType"] = json!(OCI_EMPTY);
    let mut bundle = put_blob(registry, repository, br#"{"signature":"MEUCIQ..."}"#);
    bundle["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v0.3+json");
    let mut signature_config = put_blob(registry, repository, b"{\"cosign\":true}");
    signature_config["mediaType"] = json!("application/vnd.dev.cosign.artifact.sig.v1+json");
    let signature = put_by_digest(
        registry,
        repository,
        &json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": signature_config, "layers": [bundle], "subject": subject,
            "annotations": {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
        }),
    );
    let mut spdx = put_blob(registry, repository, br#"{"spdxVersion":"SPDX-2.3"}"#);
    spdx["mediaType"] = json!("application/spdx+json");
    let sbom = put_by_digest(
        registry,
        repository,
        &json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
            "config": empty, "layers": [spdx], "subject": subject,
        }),
    );
    let hex = image["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let mut signature_entry = signature.clone();
    signature_entry["artifactType"] = json!("application/vnd.dev.cosign.artifact.sig.v1+json");
    let mut sbom_entry = sbom.clone();
    sbom_entry["artifactType"] = json!("application/spdx+json");
    let schema_index = put_manifest(
        registry,
        repository,
        &format!("sha256-{hex}"),
        OCI_INDEX,
        &json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [signature_entry, sbom_entry],
        }),
    );
    let (legacy_tag, legacy) =
        if cosign_tag { cosign_signature(registry, repository, &hex) } else { (String::new(), Value::Null) };
    Signed { image, signature, sbom, schema_index, legacy_tag, legacy }
}

/// cosign's classic form: a simple-signing payload under `sha256-<hex>.sig`.
fn cosign_signature(registry: &TestRegistry, repository: &str, hex: &str) -> (String, Value) {
    let mut config =
        put_blob(registry, repository, br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#);
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let mut payload = put_blob(registry, repository, br#"{"critical":{"type":"cosign container image signature"}}"#);
    payload["mediaType"] = json!("application/vnd.dev.cosign.simplesigning.v1+json");
    payload["annotations"] = json!({"dev.cosignproject.cosign/signature": "MEQCIF..."});
    let legacy_tag = format!("sha256-{hex}.sig");
    let legacy = put_manifest(
        registry,
        repository,
        &legacy_tag,
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [payload],
        }),
    );
    (legacy_tag, legacy)
}

/// A proxy in front of `registry` answering every GET whose path holds
/// `path` with `index` (an OCI index), as a registry with the referrers API
/// would, or a front end serving a stale tag.
fn serving_index(registry: &TestRegistry, path: &str, index: &Value) -> FaultProxy {
    let body = serde_json::to_vec(index).unwrap().into();
    let headers = vec![("Content-Type".into(), OCI_INDEX.into())];
    FaultProxy::start(
        registry.port(),
        vec![Rule::always(Fault::Serve { status: 200, headers, body }).method("GET").path(path)],
    )
}

/// `GET` of a manifest straight from the registry: (status, body).
fn manifest_at(registry: &TestRegistry, repository: &str, reference: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http(
        registry.port(),
        "GET",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
        b"",
    );
    (status, body)
}

/// `--referrers` copies signatures, SBOMs and cosign's tags with their
/// digests: found under the tag schema here (distribution 2.8 has no
/// referrers API), or through the API where the source has it; written
/// under the tag schema where the destination lacks the API, and not where
/// it has it (it indexes each artifact by its `subject`).
#[test]
fn referrers_are_copied_with_their_digests() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let s = signed(&from, "signed/app", true);
    let digest = |v: &Value| v["digest"].as_str().unwrap().to_owned();
    let hex = digest(&s.image).trim_start_matches("sha256:").to_owned();
    let source = format!("{}/signed/app:1", from.host());

    // Without --referrers: the image alone.
    copy(&[&source, &format!("{}/plain/app:1", to.host())]).success();
    assert_eq!(manifest_at(&to, "plain/app", &format!("sha256-{hex}")).0, 404);
    assert_eq!(manifest_at(&to, "plain/app", &digest(&s.signature)).0, 404);

    let out = copy(&["--referrers", &source, &format!("{}/copied/app:1", to.host())]);
    let lines: Vec<&str> = out.success().stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{}/copied/app:sha256-{hex}@{}", to.host(), digest(&s.schema_index)),
            format!("{}/copied/app:{}@{}", to.host(), s.legacy_tag, digest(&s.legacy)),
            format!("{}/copied/app:1@{}", to.host(), digest(&s.image)),
        ],
        "referrer tags first, the image's tag last"
    );
    for (reference, descriptor) in [
        ("1".to_owned(), &s.image),
        (format!("sha256-{hex}"), &s.schema_index),
        (s.legacy_tag.clone(), &s.legacy),
        (digest(&s.signature), &s.signature),
        (digest(&s.sbom), &s.sbom),
    ] {
        let (status, body) = manifest_at(&to, "copied/app", &reference);
        assert_eq!(status, 200, "{reference}");
        assert_eq!(sha256(&body), digest(descriptor), "{reference}: its digest is kept");
        assert_eq!(body, manifest_at(&from, "signed/app", &reference).1, "{reference}: the same bytes");
        let document: Value = serde_json::from_slice(&body).unwrap();
        for blob in document["layers"].as_array().into_iter().flatten().chain([&document["config"]]) {
            let Some(blob) = blob["digest"].as_str() else { continue };
            let (status, bytes) = to.get(&format!("/v2/copied/app/blobs/{blob}"));
            assert_eq!((status, sha256(&bytes)), (200, blob.to_owned()), "{reference}: blob {blob}");
        }
    }
    skopeo_verifies(&format!("{}/copied/app:1", to.host()), None);

    // A source with the referrers API (the proxy answers it as an OCI 1.1
    // registry would, listing the SBOM only): its list is what is copied,
    // and the destination gets a tag-schema index of exactly that entry.
    let mut listed = s.sbom.clone();
    listed["artifactType"] = json!("application/spdx+json");
    let api = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [listed]});
    let with_api = serving_index(&from, &format!("/referrers/{}", digest(&s.image)), &api);
    copy(&["--referrers", &format!("{}/signed/app:1", with_api.host()), &format!("{}/api/app:1", to.host())]).success();
    assert_eq!(with_api.count("GET", &format!("/referrers/{}", digest(&s.image))), 1, "the API was asked");
    let (status, body) = manifest_at(&to, "api/app", &format!("sha256-{hex}"));
    assert_eq!(status, 200);
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["manifests"], json!([listed]), "the API's entry, artifactType kept");
    assert_eq!(manifest_at(&to, "api/app", &digest(&s.signature)).0, 404, "not listed, not copied");

    // A destination with the API: the artifacts go up by digest, no tag-schema index.
    let empty = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    let native = serving_index(&to, "/referrers/", &empty);
    copy(&["--referrers", &source, &format!("{}/native/app:1", native.host())]).success();
    assert_eq!(native.count("PUT", "/manifests/sha256-"), 1, "only cosign's own tag: {:?}", native.log());
    assert_eq!(manifest_at(&to, "native/app", &format!("sha256-{hex}")).0, 404);
    assert_eq!(manifest_at(&to, "native/app", &digest(&s.sbom)).0, 200);
    assert_eq!(manifest_at(&to, "native/app", &s.legacy_tag).0, 200);

    // A source listing more referrers than any image has is refused before
    // one of them is fetched: the source does not decide how many requests
    // a copy makes.
    let flood: Vec<Value> = (0..1001)
        .map(|i| json!({"mediaType": OCI_MANIFEST, "digest": sha256(format!("{i}").as_bytes()), "size": 2}))
        .collect();
    let api = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": flood});
    let flooding = serving_index(&from, &format!("/referrers/{}", digest(&s.image)), &api);
    let source = format!("{}/signed/app:1", flooding.host());
    copy(&["--referrers", &source, &format!("{}/flood/app:1", to.host())]).fails_with(9, "more than 1000 referrers");
    assert_eq!(flooding.count("GET", "/manifests/sha256:"), 0, "none of them fetched");
}

/// A list naming a referrer the source does not have (a signature deleted,
/// its tag index not updated): that one is skipped with a warning, and the
/// rest is copied under a new index (the source's would name the missing one).
#[test]
fn a_referrer_the_source_lost_is_skipped() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    // No cosign `.sig` tag: the proxy's rule below would match its path too.
    let bare = signed(&from, "bare/app", false);
    let mut sbom_entry = bare.sbom.clone();
    sbom_entry["artifactType"] = json!("application/spdx+json");
    let missing = json!({"mediaType": OCI_MANIFEST, "digest": sha256(b"deleted"), "size": 100});
    let stale = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [missing, sbom_entry]});
    let stale_source = serving_index(&from, &format!("/manifests/sha256-{}", bare.hex()), &stale);
    let out =
        copy(&["--referrers", &format!("{}/bare/app:1", stale_source.host()), &format!("{}/stale/app:1", to.host())]);
    assert!(out.success().stderr.contains(&format!("lists {} as a referrer", sha256(b"deleted"))), "{}", out.stderr);
    let (status, body) = manifest_at(&to, "stale/app", &format!("sha256-{}", bare.hex()));
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["manifests"], json!([sbom_entry]));
}

/// Wrong bytes from the source fail the copy (exit 7) before any manifest
/// goes up, leaving no upload open; a broken source download resumes with
/// `Range`; a dropped upload recovers.
#[test]
fn corrupt_sources_fail_and_broken_transfers_recover() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let big = hoist_testkit::fixtures::incompressible_layer(3, 3 << 20);
    let fixture = hoist_testkit::fixtures::ImageFixture::new().layer(big);
    let manifest = crate::pull::hand_image(
        &from,
        "faults/app",
        &fixture,
        true,
        hoist_testkit::fixtures::gzip,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let image = put_manifest(&from, "faults/app", "1", OCI_MANIFEST, &manifest);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = manifest["layers"][0]["size"].as_u64().unwrap() as usize;

    let lying = FaultProxy::start(
        from.port(),
        vec![
            Rule::always(Fault::Serve { status: 200, headers: vec![], body: vec![7u8; size].into() })
                .method("GET")
                .path(&format!("/blobs/{layer}")),
        ],
    );
    let destination = FaultProxy::start(to.port(), vec![]);
    let out = copy(&[&format!("{}/faults/app:1", lying.host()), &format!("{}/bad/app:1", destination.host())]);
    out.fails_with(7, "is corrupt");
    assert!(out.stderr.contains(&layer), "{}", out.stderr);
    assert_eq!(destination.count("PUT", "/manifests/"), 0, "no manifest went up");
    assert_eq!(to.get(&format!("/v2/bad/app/blobs/{layer}")).0, 404);
    assert_eq!(to.open_uploads(), 0, "the upload was cancelled");

    let flaky = FaultProxy::start(
        from.port(),
        vec![Rule::first(1, Fault::TruncateResponse(1 << 20)).method("GET").path(&format!("/blobs/{layer}"))],
    );
    let resumed = format!("{}/resumed/app:1", to.host());
    let out = copy(&[&format!("{}/faults/app:1", flaky.host()), &resumed]);
    assert_eq!(out.success().stdout.trim(), format!("{resumed}@{}", image["digest"].as_str().unwrap()));
    let ranges: Vec<_> = flaky.log().into_iter().filter_map(|l| l.range).collect();
    assert_eq!(ranges, [format!("bytes={}-", 1 << 20)], "the download resumed where it broke");
    skopeo_verifies(&resumed, None);

    let dropping =
        FaultProxy::start(to.port(), vec![Rule::first(1, Fault::DropBodyAfter(500_000)).method("PUT").path("/blobs/")]);
    let recovered = format!("{}/recovered/app:1", dropping.host());
    let out = copy(&[&format!("{}/faults/app:1", from.host()), &recovered]);
    assert_eq!(out.success().stdout.trim(), format!("{recovered}@{}", image["digest"].as_str().unwrap()));
    assert!(dropping.log().iter().any(|l| l.status == 0), "an upload was dropped");
    skopeo_verifies(&recovered, None);
}

/// SIGINT while a blob is in flight: the open upload is cancelled, no tag
/// moved, exit 130.
#[test]
fn ctrl_c_cancels_the_uploads_in_flight() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let fixture =
        hoist_testkit::fixtures::ImageFixture::new().layer(hoist_testkit::fixtures::incompressible_layer(5, 1 << 20));
    let manifest = crate::pull::hand_image(
        &from,
        "slow/app",
        &fixture,
        true,
        hoist_testkit::fixtures::gzip,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    put_manifest(&from, "slow/app", "1", OCI_MANIFEST, &manifest);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    // The layer's download never answers: its upload waits, open.
    let stalling =
        FaultProxy::start(from.port(), vec![Rule::always(Fault::Stall).method("GET").path(&format!("/blobs/{layer}"))]);
    let child = hoist()
        .args([
            "copy",
            "--progress",
            "plain",
            &format!("{}/slow/app:1", stalling.host()),
            &format!("{}/slow/app:1", to.host()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::signals::wait_until("an open upload", || to.open_uploads() > 0 && stalling.count("GET", &layer) > 0);
    crate::signals::send(&child, libc::SIGINT);
    let out = crate::signals::finish(child);
    assert_eq!(out.code, 130, "{}", out.stderr);
    // The layer's upload at least (the config's too, if it was still going).
    assert!(out.stderr.contains("error: interrupted by SIGINT; cancelled the "), "{}", out.stderr);
    assert!(out.stderr.contains("hint: run the same copy again"), "{}", out.stderr);
    assert_eq!(to.open_uploads(), 0);
    assert_eq!(to.get("/v2/slow/app/manifests/1").0, 404, "no tag moved");
}

/// Errors name the reference and carry a hint.
#[test]
fn bad_references_and_missing_images_fail_clearly() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    hand_written(&from);
    copy(&["Not A Reference", &format!("{}/x:1", to.host())]).fails_with(2, "invalid image reference");
    copy(&[&format!("{}/hand/docker:1", from.host()), "127.0.0.1:5000/Upper/case"])
        .fails_with(2, "invalid image reference");
    copy(&[&format!("{}/nothing/here:1", from.host()), &format!("{}/x:1", to.host())]).fails_with(5, "nothing/here");
    copy(&[&format!("{}/hand/docker:1", from.host()), "127.0.0.1:9/x:1"]).fails_with(6, "127.0.0.1:9");
    let other = format!("{}/x@{}", to.host(), sha256(b"another"));
    copy(&[&format!("{}/hand/docker:1", from.host()), &other]).fails_with(2, &format!("names {}", sha256(b"another")));
}
