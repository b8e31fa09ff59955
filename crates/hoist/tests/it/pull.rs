//! `hoist pull` against real registries: what it writes must load and run in
//! this machine's Docker Engine (20.10), read back whole with `hoist inspect
//! --verify`, keep the registry's digests, and push back unchanged.
//!
//! Registry content comes from `hoist push`, from skopeo, and from
//! hand-written HTTP (monolithic uploads and manifest PUTs) for what no tool
//! here writes: OCI indexes with attestations, Docker manifest lists, zstd
//! layers, images with no layers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, TarWriter, gzip, layer_tar, zstd, zstd_long};
use hoist_testkit::{Fault, FaultProxy, IssuerConfig, Rule, TestRegistry, TokenIssuer, sha256, tools};
use serde_json::{Value, json};

use crate::support::{Run, hoist, hoist_run, path_str, run};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// ---- registry content by hand-written HTTP ----

/// One HTTP/1.0 request to the loopback registry; returns status, headers and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, response[end + 4..].to_vec())
}

/// Monolithic upload: POST, then PUT of the whole blob with its digest.
pub(crate) fn put_blob(registry: &TestRegistry, repository: &str, bytes: &[u8]) -> Value {
    let (status, head, _) = http(registry.port(), "POST", &format!("/v2/{repository}/blobs/uploads/"), &[], b"");
    assert_eq!(status, 202, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .unwrap()
        .trim()
        .to_owned();
    let path = location.split_once("://").map_or(location.as_str(), |(_, rest)| &rest[rest.find('/').unwrap()..]);
    let separator = if path.contains('?') { '&' } else { '?' };
    let digest = sha256(bytes);
    let (status, head, _) = http(
        registry.port(),
        "PUT",
        &format!("{path}{separator}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(status, 201, "{head}");
    json!({ "digest": digest, "size": bytes.len() })
}

/// PUT of a manifest or index; returns its descriptor.
pub(crate) fn put_manifest(
    registry: &TestRegistry,
    repository: &str,
    reference: &str,
    media_type: &str,
    document: &Value,
) -> Value {
    let bytes = serde_json::to_vec_pretty(document).unwrap();
    let (status, head, body) = http(
        registry.port(),
        "PUT",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        &bytes,
    );
    assert_eq!(status, 201, "{head}\n{}", String::from_utf8_lossy(&body));
    json!({ "mediaType": media_type, "digest": sha256(&bytes), "size": bytes.len() })
}

/// An image's config and layers put by hand; returns its manifest's bytes.
pub(crate) fn hand_image(
    registry: &TestRegistry,
    repository: &str,
    fixture: &ImageFixture,
    oci: bool,
    compress: fn(&[u8]) -> Vec<u8>,
    layer_type: &str,
) -> Value {
    let config = fixture.config();
    let mut config_descriptor = put_blob(registry, repository, &config);
    config_descriptor["mediaType"] = json!(if oci { OCI_CONFIG } else { DOCKER_CONFIG });
    let layers: Vec<Value> = fixture
        .layers
        .iter()
        .map(|tar| {
            let mut descriptor = put_blob(registry, repository, &compress(tar));
            descriptor["mediaType"] = json!(layer_type);
            descriptor
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": if oci { OCI_MANIFEST } else { DOCKER_MANIFEST },
        "config": config_descriptor,
        "layers": layers,
    })
}

// ---- images ----

/// A root filesystem holding Debian's static busybox and `/etc/motd`.
pub(crate) fn busybox_rootfs(motd: &str) -> Vec<u8> {
    tools::require("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].iter().find_map(|p| std::fs::read(p).ok()).unwrap();
    let mut tar = TarWriter::new();
    tar.dir("bin");
    tar.executable("bin/busybox", &busybox);
    tar.symlink("bin/cat", "busybox");
    tar.file("etc/motd", motd.as_bytes());
    tar.finish()
}

/// A runnable image: busybox in one layer, `motd` in a second.
pub(crate) fn runnable(motd: &str) -> ImageFixture {
    ImageFixture::new().layer(busybox_rootfs("base\n")).layer(layer_tar(&[("etc/motd", motd.as_bytes())]))
}

pub(crate) fn unique(registry: &TestRegistry) -> String {
    format!("{}-{}", std::process::id(), registry.port())
}

// ---- checks ----

/// `hoist inspect --json --verify ARCHIVE`: every layer against its diff_id.
fn inspect_verified(archive: &Path) -> Value {
    let inspect = hoist_run(&["inspect", "--json", "--verify", path_str(archive)]);
    inspect.success();
    serde_json::from_str(&inspect.stdout).unwrap()
}

/// The archive's members by name.
fn members(archive: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut files = std::collections::HashMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

/// `docker load -i ARCHIVE`, then `docker run --pull never TAG cat /etc/motd`; removes the image.
fn loads_and_runs(archive: &Path, tag: &str, motd: &str) {
    tools::require_docker();
    let loaded = tools::run_ok(Command::new("docker").args(["load", "-i", path_str(archive)]));
    let said = run_in_docker(tag);
    assert!(loaded.contains(tag), "docker load named {loaded}");
    assert_eq!(said, motd, "{tag} runs");
}

pub(crate) fn run_in_docker(tag: &str) -> String {
    let said = tools::run(Command::new("docker").args([
        "run",
        "--rm",
        "--pull",
        "never",
        tag,
        "/bin/busybox",
        "cat",
        "/etc/motd",
    ]));
    let _ = tools::run(Command::new("docker").args(["rmi", "-f", tag]));
    assert!(said.status.success(), "docker run {tag}: {}", String::from_utf8_lossy(&said.stderr));
    String::from_utf8_lossy(&said.stdout).into_owned()
}

fn pull(args: &[&str]) -> Run {
    hoist_run(&[&["pull"][..], args].concat())
}

// ---- tests ----

/// Pushed by hoist, pulled by hoist to a file and to standard output piped
/// into `docker load`: Docker loads and runs both; the archive verifies.
#[test]
fn pulled_images_load_and_run_from_a_file_and_from_stdout() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let id = unique(&registry);
    let motd = format!("pulled {id}\n");
    let saved = dir.path().join("saved.tar");
    DockerSaveClassic::new().image(runnable(&motd).tag("x:1")).write_to(&saved);
    let reference = format!("{}/pull/run:{id}", registry.host());
    hoist_run(&["push", path_str(&saved), &reference]).success();

    let archive = dir.path().join("pulled.tar");
    let pulled = pull(&[&reference, path_str(&archive)]);
    pulled.success();
    assert!(pulled.stdout.starts_with(&format!("{reference}@sha256:")), "{}", pulled.stdout);
    let files = members(&archive);
    for member in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        assert!(files.contains_key(member), "{member} is in the archive");
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!([reference]));
    let inspected = inspect_verified(&archive);
    assert_eq!(inspected["format"], "docker-save-oci");
    assert_eq!(inspected["images"][0]["tags"], json!([reference]));
    assert_eq!(inspected["images"][0]["config"], runnable(&motd).config_digest());
    assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
    loads_and_runs(&archive, &reference, &motd);

    // NDJSON progress names what happens, blob by blob.
    let again = dir.path().join("again.tar");
    let json = pull(&["--progress", "json", &reference, path_str(&again)]);
    let events: Vec<Value> = json.success().stderr.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["resolved", "plan"], "{kinds:?}");
    assert_eq!(events[0]["platform"], "linux/amd64");
    assert_eq!(events[1]["blobs"], 2, "two layers to download");
    assert_eq!(kinds.iter().filter(|k| **k == "start").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "downloaded").count(), 2);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&archive).unwrap(),
        "the same images make the same archive"
    );

    // Standard output into `docker load`, as it streams.
    tools::require_docker();
    let mut hoist = hoist();
    let mut pulling = hoist
        .args(["pull", "--progress", "none", &reference, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let loaded = Command::new("docker").args(["load"]).stdin(pulling.stdout.take().unwrap()).output().unwrap();
    let finished = pulling.wait_with_output().unwrap();
    assert!(finished.status.success(), "{}", String::from_utf8_lossy(&finished.stderr));
    assert!(
        String::from_utf8_lossy(&finished.stderr).contains(&format!("{reference}@sha256:")),
        "results go to stderr"
    );
    assert!(loaded.status.success(), "docker load: {}", String::from_utf8_lossy(&loaded.stderr));
    assert_eq!(run_in_docker(&reference), motd);
}

/// Registry content no tool here writes, put by hand-written HTTP: a Docker
/// v2 manifest, an OCI manifest with zstd layers, an OCI index with an arm64
/// image and an attestation, a Docker manifest list, an image with no layers.
pub(crate) struct HandWritten {
    /// (repository, motd if runnable, image) of each, all tagged `1`.
    pub(crate) images: Vec<(&'static str, Option<String>, ImageFixture)>,
    pub(crate) zstd_descriptor: Value,
    pub(crate) index: Value,
    pub(crate) index_entries: Vec<Value>,
}

pub(crate) fn hand_written(registry: &TestRegistry) -> HandWritten {
    let id = unique(registry);
    let identity = |x: &[u8]| x.to_vec();

    // Docker v2 schema 2, gzip layers.
    let docker_motd = format!("docker v2 {id}\n");
    let image = runnable(&docker_motd);
    let manifest = hand_image(registry, "hand/docker", &image, false, gzip, DOCKER_GZIP);
    put_manifest(registry, "hand/docker", "1", DOCKER_MANIFEST, &manifest);

    // OCI, zstd layers: Docker 20.10 cannot load zstd, so they become plain tars.
    let zstd_motd = format!("zstd {id}\n");
    let zstd_image = runnable(&zstd_motd);
    let manifest = hand_image(registry, "hand/zstd", &zstd_image, true, zstd, OCI_ZSTD);
    let zstd_descriptor = put_manifest(registry, "hand/zstd", "1", OCI_MANIFEST, &manifest);

    // An OCI index: amd64, arm64 and an attestation (unknown/unknown).
    let index_motd = format!("oci index {id}\n");
    let amd64 = runnable(&index_motd);
    let mut arm64 = ImageFixture::new().layer(layer_tar(&[("etc/motd", b"arm64\n")]));
    arm64.architecture = "arm64".into();
    let mut attestation = ImageFixture::new().layer(layer_tar(&[("provenance.json", b"{}")]));
    attestation.os = "unknown".into();
    attestation.architecture = "unknown".into();
    let mut entries = Vec::new();
    for (fixture, tag, platform) in [
        (&attestation, "att", json!({"os": "unknown", "architecture": "unknown"})),
        (&arm64, "arm", json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
        (&amd64, "amd", json!({"os": "linux", "architecture": "amd64"})),
    ] {
        let manifest = hand_image(registry, "hand/index", fixture, true, gzip, OCI_GZIP);
        let mut entry = put_manifest(registry, "hand/index", tag, OCI_MANIFEST, &manifest);
        entry["platform"] = platform;
        if tag == "att" {
            entry["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest"});
        }
        entries.push(entry);
    }
    let index = put_manifest(
        registry,
        "hand/index",
        "1",
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );

    // A Docker manifest list.
    let list_motd = format!("manifest list {id}\n");
    let listed = runnable(&list_motd);
    let manifest = hand_image(registry, "hand/list", &listed, false, gzip, DOCKER_GZIP);
    let mut entry = put_manifest(registry, "hand/list", "amd", DOCKER_MANIFEST, &manifest);
    entry["platform"] = json!({"os": "linux", "architecture": "amd64"});
    put_manifest(
        registry,
        "hand/list",
        "1",
        DOCKER_LIST,
        &json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [entry]}),
    );

    // No layers at all.
    let empty = ImageFixture::new();
    let manifest = hand_image(registry, "hand/empty", &empty, true, identity, OCI_GZIP);
    put_manifest(registry, "hand/empty", "1", OCI_MANIFEST, &manifest);

    HandWritten {
        images: vec![
            ("hand/docker", Some(docker_motd), image),
            ("hand/zstd", Some(zstd_motd), zstd_image),
            ("hand/index", Some(index_motd), amd64),
            ("hand/list", Some(list_motd), listed),
            ("hand/empty", None, empty),
        ],
        zstd_descriptor,
        index,
        index_entries: entries,
    }
}

/// Each hand-written image pulls into a Docker archive that verifies, whose
/// config and diff_ids are the image's, and that Docker loads (and runs).
#[test]
fn hand_written_manifests_indexes_and_zstd_layers_load_in_docker() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let seeded = hand_written(&registry);
    for (repository, motd, fixture) in &seeded.images {
        let reference = format!("{host}/{repository}:1");
        let archive = dir.path().join(format!("{}.tar", repository.replace('/', "-")));
        pull(&[&reference, path_str(&archive)]).success();
        let inspected = inspect_verified(&archive);
        let found = &inspected["images"][0];
        assert_eq!(inspected["images"].as_array().unwrap().len(), 1, "{reference}: one platform image");
        assert_eq!(found["config"], fixture.config_digest(), "{reference}: the config, byte for byte");
        assert_eq!(found["platform"], "linux/amd64", "{reference}");
        let diff_ids: Vec<&str> =
            found["layers"].as_array().unwrap().iter().map(|l| l["diff_id"].as_str().unwrap()).collect();
        assert_eq!(diff_ids, fixture.diff_ids(), "{reference}: the layers' diff_ids");
        if *repository == "hand/zstd" {
            let compressions: Vec<&str> =
                found["layers"].as_array().unwrap().iter().map(|l| l["compression"].as_str().unwrap()).collect();
            assert_eq!(compressions, ["none", "none"], "zstd layers are stored as plain tars for Docker");
        }
        match motd {
            Some(motd) => loads_and_runs(&archive, &reference, motd),
            None => {
                tools::require_docker();
                let loaded = tools::run_ok(Command::new("docker").args(["load", "-i", path_str(&archive)]));
                assert!(loaded.contains(&reference), "{loaded}");
                let _ = tools::run(Command::new("docker").args(["rmi", "-f", &reference]));
            }
        }
    }
}

/// `--format oci` keeps the registry's own manifests (zstd layers included)
/// and, with `--all-platforms`, the whole index; `--platform` chooses, and a
/// platform the index lacks is an error listing those it has.
#[test]
fn oci_archives_keep_the_registrys_manifests_and_platforms_are_chosen() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let HandWritten { zstd_descriptor, index, index_entries: entries, .. } = hand_written(&registry);
    let zstd_reference = format!("{host}/hand/zstd:1");
    let oci = dir.path().join("zstd-oci.tar");
    pull(&["--format", "oci", &zstd_reference, path_str(&oci)]).success();
    let files = members(&oci);
    assert!(!files.contains_key("manifest.json"), "a pure OCI layout");
    let index_json: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], zstd_descriptor["digest"]);
    let inspected = inspect_verified(&oci);
    let compressions: Vec<&str> = inspected["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["compression"].as_str().unwrap())
        .collect();
    assert_eq!(compressions, ["zstd", "zstd"]);

    // --all-platforms: the whole index, attestation included, its digest unchanged.
    let index_reference = format!("{host}/hand/index:1");
    let whole = dir.path().join("index-oci.tar");
    let out = pull(&["--format", "oci", "--all-platforms", "--output", "json", &index_reference, path_str(&whole)]);
    out.success();
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["images"][0]["digest"], index["digest"]);
    assert_eq!(summary["images"][0]["platform"], Value::Null);
    let files = members(&whole);
    let index_json: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], index["digest"]);
    for entry in &entries {
        let hex = entry["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(files.contains_key(&format!("blobs/sha256/{hex}")), "every platform's manifest is kept");
    }
    let inspected = inspect_verified(&whole);
    let platforms: Vec<&str> =
        inspected["images"].as_array().unwrap().iter().map(|i| i["platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["linux/arm64", "linux/amd64"], "the attestation is no image");

    // --platform picks arm64; a platform the index lacks is an error listing those it has.
    let arm = dir.path().join("arm.tar");
    let out = pull(&["--platform", "linux/arm64", "--output", "json", &index_reference, path_str(&arm)]);
    out.success();
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["images"][0]["digest"], entries[1]["digest"]);
    assert_eq!(summary["images"][0]["platform"], "linux/arm64/v8");
    let missing = dir.path().join("s390x.tar");
    pull(&["--platform", "linux/s390x", &index_reference, path_str(&missing)])
        .fails_with(5, "has no image for linux/s390x; it has linux/arm64/v8, linux/amd64");
    assert!(!missing.exists());
    pull(&["--all-platforms", &index_reference, path_str(&missing)]).fails_with(2, "--all-platforms");
}

/// Several references in one archive: shared layers stored once, every
/// RepoTag as asked, none for a reference by digest; an image pushed by
/// skopeo among them. Docker loads them all.
#[test]
fn several_references_share_layers_and_keep_their_names() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let id = unique(&registry);
    let host = registry.host();
    let a_motd = format!("a {id}\n");
    let b_motd = format!("b {id}\n");
    let saved = dir.path().join("saved.tar");
    DockerSaveClassic::new().image(runnable(&a_motd).tag("a:1")).image(runnable(&b_motd).tag("b:1")).write_to(&saved);
    let a = format!("{host}/multi/a:{id}");
    hoist_run(&["push", "--image", "1", path_str(&saved), &a]).success();
    // b goes up through skopeo (docker-archive: the classic archive's second image).
    let b = format!("{host}/multi/b:{id}");
    tools::require("skopeo", "skopeo");
    tools::run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}:b:1", saved.display()),
        &format!("docker://{b}"),
    ]));
    let pushed_a = hoist_run(&["push", "--image", "1", path_str(&saved), &format!("{host}/multi/a:again")]);
    let a_digest = pushed_a.success().stdout.trim().rsplit('@').next().unwrap().to_owned();
    let by_digest = format!("{host}/multi/a@{a_digest}");

    let archive = dir.path().join("multi.tar");
    let out = pull(&["--output", "json", &a, &b, &by_digest, path_str(&archive)]);
    out.success();
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["images"].as_array().unwrap().len(), 3);
    assert_eq!(summary["images"][2]["digest"], a_digest);
    for image in summary["images"].as_array().unwrap() {
        assert_eq!(image["platform"], "linux/amd64");
        assert!(image["blobs"].as_array().unwrap().iter().all(|b| b["size"].as_u64().is_some()));
    }
    let files = members(&archive);
    let blobs = files.keys().filter(|k| k.starts_with("blobs/sha256/") && k.len() > 13).count();
    // a: manifest, config, 2 layers; b (skopeo): manifest, config, 2 layers; a by digest: all shared.
    assert_eq!(blobs, 8, "the image pulled twice is stored once: {:?}", files.keys().collect::<Vec<_>>());
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2, "{manifest}");
    assert_eq!(manifest[0]["RepoTags"], json!([a]), "a by digest adds no tag");
    assert_eq!(manifest[1]["RepoTags"], json!([b]));
    inspect_verified(&archive);
    tools::require_docker();
    let loaded = tools::run_ok(Command::new("docker").args(["load", "-i", path_str(&archive)]));
    assert!(loaded.contains(&a) && loaded.contains(&b), "{loaded}");
    assert_eq!(run_in_docker(&a), a_motd);
    assert_eq!(run_in_docker(&b), b_motd);
}

/// `--format oci` keeps the manifest digest, and `hoist push --format oci`
/// of the pulled archive gives the same digest back; a Docker archive pushed
/// back gives the same Docker manifest.
#[test]
fn pulled_archives_push_back_to_the_same_digests() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let saved = dir.path().join("saved.tar");
    DockerSaveClassic::new().image(runnable("round trip\n").tag("x:1")).write_to(&saved);
    for (format, name) in [("oci", "oci"), ("docker", "docker")] {
        let source = format!("{host}/round/{name}:1");
        let pushed = hoist_run(&["push", "--format", format, path_str(&saved), &source]);
        let digest = pushed.success().stdout.trim().rsplit('@').next().unwrap().to_owned();
        let archive = dir.path().join(format!("{name}.tar"));
        pull(&["--format", format, &source, path_str(&archive)]).success();
        let inspected = inspect_verified(&archive);
        if format == "oci" {
            let files = members(&archive);
            let index_json: Value = serde_json::from_slice(&files["index.json"]).unwrap();
            assert_eq!(index_json["manifests"][0]["digest"], digest.as_str(), "the registry's manifest, unchanged");
        }
        assert_eq!(inspected["images"][0]["tags"], json!([source]));
        let again = format!("{host}/round/{name}-again:1");
        let repushed = hoist_run(&["push", "--format", format, path_str(&archive), &again]);
        assert_eq!(repushed.success().stdout.trim(), format!("{again}@{digest}"), "{format}: the same digest");
        // Standard input too: the one-pass reader takes what pull writes.
        let streamed = crate::support::hoist_stdin(
            &["push", "--format", format, "-", &format!("{host}/round/{name}-stdin:1")],
            std::fs::read(&archive).unwrap(),
            None,
        );
        assert!(streamed.success().stdout.contains(&digest));
    }
}

/// A blob served with wrong bytes fails the pull (exit 7) and leaves no
/// archive; a broken download resumes with Range and succeeds.
#[test]
fn corrupt_blobs_fail_and_broken_downloads_resume() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    let big = hoist_testkit::fixtures::incompressible_layer(7, 3 << 20);
    DockerSaveClassic::new().image(ImageFixture::new().tag("x:1").layer(big.clone())).write_to(&saved);
    let source = format!("{}/faults/app:1", registry.host());
    hoist_run(&["push", path_str(&saved), &source]).success();
    let pushed: Value =
        serde_json::from_str(&hoist_run(&["push", "--output", "json", path_str(&saved), &source]).success().stdout)
            .unwrap();
    let layer_digest = pushed["images"][0]["blobs"][1]["digest"].as_str().unwrap().to_owned();

    let corrupt = FaultProxy::start(
        registry.port(),
        vec![
            Rule::always(Fault::Serve { status: 200, headers: vec![], body: bytes::Bytes::from(vec![0u8; 100]) })
                .path(&format!("/blobs/{layer_digest}")),
        ],
    );
    let archive = dir.path().join("corrupt.tar");
    pull(&[&format!("{}/faults/app:1", corrupt.host()), path_str(&archive)]).fails_with(7, "is corrupt");
    assert_eq!(dir.path().read_dir().unwrap().count(), 1, "nothing but the saved archive is left");
    // To standard output: a loud failure, and no index.json or manifest.json written.
    let mut command = hoist();
    let streamed = run(command.args(["pull", &format!("{}/faults/app:1", corrupt.host()), "-"]).stdout(Stdio::piped()));
    assert_eq!(streamed.code, 7, "{}", streamed.stderr);
    assert!(streamed.stderr.contains("error: "), "{}", streamed.stderr);
    assert!(!streamed.stdout.contains("manifest.json"), "a cut stream names no image");

    let flaky = FaultProxy::start(
        registry.port(),
        vec![Rule::first(1, Fault::TruncateResponse(1 << 20)).method("GET").path(&format!("/blobs/{layer_digest}"))],
    );
    let archive = dir.path().join("resumed.tar");
    pull(&[&format!("{}/faults/app:1", flaky.host()), path_str(&archive)]).success();
    assert!(
        flaky.log().iter().any(|l| l.range.as_deref().is_some_and(|r| r.starts_with("bytes="))),
        "resumed with Range"
    );
    inspect_verified(&archive);
}

/// The reader of standard output going away is a local failure (exit 1,
/// naming standard output), never a verification failure.
#[test]
fn a_closed_standard_output_is_a_local_failure() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    let big = hoist_testkit::fixtures::incompressible_layer(11, 4 << 20);
    DockerSaveClassic::new().image(ImageFixture::new().tag("x:1").layer(big)).write_to(&saved);
    let reference = format!("{}/closed/app:1", registry.host());
    hoist_run(&["push", path_str(&saved), &reference]).success();
    let mut child =
        hoist().args(["pull", &reference, "-"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut head = [0u8; 1000];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("error: cannot write standard output"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

/// Peak resident memory so far of a running process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// To standard output, memory stays bounded when many small layers could
/// finish downloading behind a big one that a slow reader holds up: the
/// downloads ahead wait until each is written.
#[test]
fn stdout_memory_stays_bounded_behind_a_slow_reader() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    let mut image = ImageFixture::new().tag("x:1").layer(hoist_testkit::fixtures::incompressible_layer(1, 16 << 20));
    for seed in 2..42 {
        image = image.layer(hoist_testkit::fixtures::incompressible_layer(seed, 3 << 19));
    }
    DockerSaveClassic::new().image(image).write_to(&saved);
    let reference = format!("{}/bounded/app:1", registry.host());
    hoist_run(&["push", path_str(&saved), &reference]).success();

    let mut child = hoist()
        .args(["pull", "--progress", "none", &reference, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing is read for a while: the big first layer fills the pipe and
    // waits; the 60 MiB of small layers behind it must not pile up.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let held = peak_kib(child.id());
    let mut archive = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut archive).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(archive.len() > 70 << 20, "the whole image came through");
    assert!(held < 48 << 10, "peak {held} KiB while the reader waited: downloads piled up");
}

/// Basic and token auth: credentials from flags; a pull-only token scope;
/// Docker loads and runs what was pulled; without credentials, exit 4.
#[test]
fn pulls_from_basic_and_token_auth_registries() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    let motd = format!("behind a login {}\n", std::process::id());
    DockerSaveClassic::new().image(runnable(&motd).tag("x:1")).write_to(&saved);
    let basic = TestRegistry::builder().basic_auth("puller", "pa55").start();
    let issuer = TokenIssuer::start(IssuerConfig::default().user("puller", "pa55"));
    let token = TestRegistry::builder().token_auth(&issuer).start();
    for registry in [&basic, &token] {
        let reference = format!("{}/auth/app:1", registry.host());
        let with_password = |command: &mut Command, args: &[&str]| -> Run {
            command
                .args(args)
                .args(["--username", "puller", "--password-stdin"])
                .env("DOCKER_CONFIG", dir.path().join("no-docker"))
                .env("REGISTRY_AUTH_FILE", dir.path().join("no-auth.json"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = command.spawn().unwrap();
            child.stdin.take().unwrap().write_all(b"pa55\n").unwrap();
            let output = child.wait_with_output().unwrap();
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        };
        with_password(&mut hoist(), &["push", path_str(&saved), &reference]).success();
        let archive = dir.path().join("auth.tar");
        with_password(&mut hoist(), &["pull", &reference, path_str(&archive)]).success();
        inspect_verified(&archive);
        loads_and_runs(&archive, &reference, &motd);
        let anonymous = run(hoist()
            .args(["pull", &reference, path_str(&dir.path().join("anonymous.tar"))])
            .env("DOCKER_CONFIG", dir.path().join("no-docker"))
            .env("REGISTRY_AUTH_FILE", dir.path().join("no-auth.json"))
            .env_remove("HOIST_USERNAME")
            .env_remove("HOIST_PASSWORD"));
        anonymous.fails_with(4, "auth/app");
    }
    let scopes: Vec<String> = issuer.issued().iter().map(|i| i.scopes.clone()).collect();
    assert!(scopes.iter().any(|s| s == "repository:auth/app:pull"), "a pull asks for pull only: {scopes:?}");
}

/// `--verify` decompresses each layer on the way and checks its diff_id:
/// a registry image whose layer does not match its config fails (exit 7)
/// and leaves nothing; a sound one (gzip and zstd) passes.
#[test]
fn verify_checks_diff_ids_while_downloading() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let claimed = ImageFixture::new().layer(layer_tar(&[("a", b"what the config says")]));
    let mut manifest = hand_image(&registry, "verify/lying", &claimed, true, gzip, OCI_GZIP);
    let mut actual = put_blob(&registry, "verify/lying", &gzip(&layer_tar(&[("a", b"something else")])));
    actual["mediaType"] = json!(OCI_GZIP);
    manifest["layers"][0] = actual;
    put_manifest(&registry, "verify/lying", "1", OCI_MANIFEST, &manifest);
    let lying = format!("{}/verify/lying:1", registry.host());
    let archive = dir.path().join("lying.tar");
    pull(&["--verify", &lying, path_str(&archive)]).fails_with(7, "decompresses to");
    assert_eq!(dir.path().read_dir().unwrap().count(), 0, "no archive, no temporary file");
    // Without --verify the blob digests check out, and inspect --verify finds the lie.
    pull(&[&lying, path_str(&archive)]).success();
    hoist_run(&["inspect", "--verify", path_str(&archive)]).fails_with(7, "does not match");

    // A plain tar served under a gzip media type.
    let mislabelled = ImageFixture::new().layer(layer_tar(&[("p", b"plain, said to be gzip")]));
    let manifest = hand_image(&registry, "verify/label", &mislabelled, true, <[u8]>::to_vec, OCI_GZIP);
    put_manifest(&registry, "verify/label", "1", OCI_MANIFEST, &manifest);
    let archive = dir.path().join("label.tar");
    pull(&["--verify", &format!("{}/verify/label:1", registry.host()), path_str(&archive)])
        .fails_with(7, "does not decompress as gzip");
    assert!(!archive.exists());

    let sound = ImageFixture::new().layer(layer_tar(&[("z", b"zstd")]));
    let manifest = hand_image(&registry, "verify/zstd", &sound, true, zstd, OCI_ZSTD);
    put_manifest(&registry, "verify/zstd", "1", OCI_MANIFEST, &manifest);
    for format in ["oci", "docker"] {
        let archive = dir.path().join(format!("sound-{format}.tar"));
        pull(&["--verify", "--format", format, &format!("{}/verify/zstd:1", registry.host()), path_str(&archive)])
            .success();
        inspect_verified(&archive);
    }

    // Made with `zstd --long=31`: a pull reads it as a push does (a 2 GiB
    // window, past zstd's default limit), decompressed for docker too.
    let long = ImageFixture::new().layer(layer_tar(&[("l", b"zstd --long")]));
    let manifest = hand_image(&registry, "verify/long", &long, true, zstd_long, OCI_ZSTD);
    put_manifest(&registry, "verify/long", "1", OCI_MANIFEST, &manifest);
    for format in ["oci", "docker"] {
        let archive = dir.path().join(format!("long-{format}.tar"));
        pull(&["--verify", "--format", format, &format!("{}/verify/long:1", registry.host()), path_str(&archive)])
            .success();
        inspect_verified(&archive);
    }
}

/// Over HTTPS with a private CA: `--https --ca-cert`, as for push.
#[test]
fn pulls_over_tls_with_a_private_ca() {
    let ca = hoist_testkit::TestCa::generate();
    let registry = TestRegistry::builder().tls(&ca).start();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    DockerSaveClassic::new().image(ImageFixture::new().tag("x:1").layer(layer_tar(&[("t", b"tls")]))).write_to(&saved);
    let reference = format!("{}/tls/app:1", registry.host());
    let ca_cert = ca.ca_cert();
    let tls = ["--https", "--ca-cert", path_str(&ca_cert)];
    let certs_d = dir.path().join("no-certs.d");
    run(hoist().args(["push", path_str(&saved), &reference]).args(tls).env("HOIST_CERTS_D", &certs_d)).success();
    let archive = dir.path().join("tls.tar");
    run(hoist().args(["pull", &reference, path_str(&archive)]).args(tls).env("HOIST_CERTS_D", &certs_d)).success();
    inspect_verified(&archive);
    // Without the CA: refused, with a hint naming --ca-cert.
    let untrusted = dir.path().join("untrusted.tar");
    run(hoist().args(["pull", "--https", &reference, path_str(&untrusted)]).env("HOIST_CERTS_D", &certs_d))
        .fails_with(6, "");
    assert!(!untrusted.exists());
}

/// Errors name the reference and carry a hint.
#[test]
fn missing_images_and_bad_arguments_fail_clearly() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("none.tar");
    let reference = format!("{}/nothing/here:1", registry.host());
    pull(&[&reference, path_str(&archive)]).fails_with(5, "nothing/here");
    assert!(!archive.exists());
    pull(&["Not A Reference", path_str(&archive)]).fails_with(2, "invalid image reference");
    pull(&["--platform", "linux/", &reference, path_str(&archive)]).fails_with(2, "invalid platform");
    pull(&[&reference, path_str(dir.path())]).fails_with(2, "is a directory");
}
