//! `hoist serve`: the HTTP API driven with curl as its users call it, and the
//! page driven in headless Chromium, against real distribution registries;
//! every push is checked with skopeo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_testkit::fixtures::{
    DockerArchive, DockerSaveClassic, DockerSaveOci, ImageFixture, OciArchive, gzip, incompressible_layer, layer_tar,
    zstd,
};
use hoist_testkit::{Fault, FaultProxy, Rule, TestCa, TestRegistry, tools};

use crate::support::{assert_manifest_digest, copy_and_check, copy_and_check_as, hoist};

/// A running `hoist serve`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Service {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl Service {
    fn start(args: &[&str]) -> Self {
        let mut child = hoist()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hoist serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let address = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("hoist serve did not start: {first}"))
            .trim_end_matches('/')
            .to_owned();
        let log = Arc::new(Mutex::new(first));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, address, log }
    }

    /// `http://127.0.0.1:PORT` (or https).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn port(&self) -> u16 {
        self.address.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the service to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("TERM");
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// What curl got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The pushed `REF@DIGEST` for `reference`.
    fn pushed(&self, reference: &str) -> String {
        assert_eq!(self.status, 200, "{self:?}");
        let json = self.json();
        let image = json["images"].as_array().unwrap().iter().find(|i| i["reference"] == reference);
        let image = image.unwrap_or_else(|| panic!("{reference} not in {json}"));
        image["digest"].as_str().unwrap().to_owned()
    }

    /// An error answer with `status`, its message containing `message`, and a hint.
    fn fails_with(&self, status: u16, message: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        let error = &json["error"];
        assert!(error["message"].as_str().unwrap().contains(message), "expected `{message}` in {error}");
        assert!(!error["hint"].as_str().unwrap_or_default().is_empty(), "no hint in {error}");
        json
    }
}

/// `curl ARGS URL`, its status, headers and body.
fn curl(args: &[&str], url: &str) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (body, headers) = (dir.path().join("body"), dir.path().join("headers"));
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-o", path(&body), "-D", path(&headers), "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (install curl)");
    Answer {
        status: String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `curl -T FILE URL/api/push?dest=DEST` and any more `args`.
fn upload(service: &Service, file: &Path, dest: &str, args: &[&str]) -> Answer {
    let mut all = vec!["-T", path(file)];
    all.extend_from_slice(args);
    curl(&all, &service.url(&format!("/api/push?dest={dest}")))
}

fn image(name: &str) -> ImageFixture {
    ImageFixture::new()
        .tag(&format!("{name}:1.0"))
        .layer(layer_tar(&[("etc/os-release", format!("ID={name}\n").as_bytes()), ("bin/tool", &vec![7u8; 200_000])]))
        .layer(incompressible_layer(name.bytes().map(u64::from).sum(), 1024 * 1024 + 17))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    file
}

/// Waits until `check` holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The registry holds no tag `tag` in `repository` (read from its storage,
/// so that it works behind authentication too).
fn assert_no_tag(registry: &TestRegistry, repository: &str, tag: &str) {
    let link = registry.storage().join(format!("docker/registry/v2/repositories/{repository}/_manifests/tags/{tag}"));
    assert!(!link.exists(), "{repository}:{tag} must not exist");
}

#[test]
fn curl_pushes_every_archive_layout() {
    let registry = TestRegistry::start();
    let service = Service::start(&["--registry", &registry.host()]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("layouts");
    let classic = DockerSaveClassic::new().image(fixture.clone()).build();
    let layouts = [
        ("classic.tar", classic.clone()),
        ("oci-save.tar", DockerSaveOci::new().image(fixture.clone()).build()),
        ("podman.tar", DockerArchive::new().image(fixture.clone()).build()),
        ("oci.tar", OciArchive::new().image(fixture.clone()).build()),
        ("classic.tar.gz", gzip(&classic)),
        ("classic.tar.zst", zstd(&classic)),
    ];
    for (index, (name, bytes)) in layouts.iter().enumerate() {
        let file = write(dir.path(), name, bytes);
        let dest = format!("{}/team/app:{index}", registry.host());
        // PUT (curl -T) for most, POST for one.
        let answer = if index == 1 {
            curl(&["--data-binary", &format!("@{}", path(&file))], &service.url(&format!("/api/push?dest={dest}")))
        } else {
            upload(&service, &file, &dest, &[])
        };
        let digest = answer.pushed(&dest);
        assert_eq!(answer.json()["images"][0]["pushed"], format!("{dest}@{digest}"), "{name}");
        assert_manifest_digest(&dest, &digest);
        copy_and_check(&dest, &fixture);
    }
    assert_eq!(registry.open_uploads(), 0, "no session left open");
    let health = curl(&[], &service.url("/healthz"));
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));
}

#[test]
fn without_dest_the_repotags_go_to_the_first_registry() {
    let first = TestRegistry::start();
    let second = TestRegistry::start();
    let service = Service::start(&["--registry", &format!("{}/mirror", first.host()), "--registry", &second.host()]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("repotags");
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(fixture.clone()).build());
    let answer = curl(&["-T", path(&file)], &service.url("/api/push"));
    let reference = format!("{}/mirror/repotags:1.0", first.host());
    let digest = answer.pushed(&reference);
    assert_manifest_digest(&reference, &digest);
    copy_and_check(&reference, &fixture);
    assert_eq!(second.blob_count(), 0, "only the first registry takes RepoTags");

    // `--registry HOST/mirror` allows that prefix and nothing else there.
    let outside = upload(&service, &file, &format!("{}/other/app:1", first.host()), &[]);
    outside.fails_with(403, "does not push to");
    let sibling = upload(&service, &file, &format!("{}/mirrored/app:1", first.host()), &[]);
    sibling.fails_with(403, "does not push to");
    let inside = format!("{}/mirror/team/app:2", first.host());
    assert_manifest_digest(&inside, &upload(&service, &file, &inside, &[]).pushed(&inside));
}

#[test]
fn only_the_named_registries_and_the_service_own_page_may_push() {
    let registry = TestRegistry::start();
    let other = TestRegistry::start();
    // The registry not named, behind a proxy that logs every request it gets.
    let watched = FaultProxy::start(other.port(), vec![]);
    let service = Service::start(&["--registry", &registry.host(), "--max-size", "100K"]);
    let dir = tempfile::tempdir().unwrap();
    let small = image("x");
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(small.clone()).build());

    let relay = upload(&service, &file, &format!("{}/team/app:1", watched.host()), &[]);
    relay.fails_with(403, &format!("does not push to {}", watched.host()));
    assert!(
        relay.json()["error"]["hint"].as_str().unwrap().contains(&registry.host()),
        "the hint names what is allowed"
    );
    assert!(watched.log().is_empty(), "not one request to a registry not named: {:?}", watched.log());

    let dest = format!("{}/team/app:1", registry.host());
    let cross = upload(&service, &file, &dest, &["-H", "Origin: https://evil.example"]);
    cross.fails_with(403, "https://evil.example");
    let cross_fetch = upload(&service, &file, &dest, &["-H", "Sec-Fetch-Site: cross-site"]);
    cross_fetch.fails_with(403, "other sites");
    let own = format!("Origin: http://127.0.0.1:{}", service.port());
    let bad_dest = upload(&service, &file, "team//app", &["-H", &own]);
    assert_eq!(bad_dest.status, 400, "the service's own origin passes the origin check: {bad_dest:?}");

    // Over --max-size: told by Content-Length, and counted in a chunked body.
    let declared = upload(&service, &file, &dest, &[]);
    declared.fails_with(413, "larger than this service accepts");
    let chunked = upload(&service, &file, &dest, &["-H", "Transfer-Encoding: chunked"]);
    chunked.fails_with(413, "larger than this service accepts");
    assert_no_tag(&registry, "team/app", "1");
    eventually(Duration::from_secs(10), "sessions cancelled", || registry.open_uploads() == 0);

    let broken = write(dir.path(), "broken.tar", b"#!/bin/sh\necho this is a script, not an archive\n");
    let json = upload(&service, &broken, &dest, &[]).fails_with(400, "script");
    assert!(json["images"].as_array().unwrap().is_empty(), "{json}");

    // A name that is not the service's (DNS rebinding: a page elsewhere that
    // points its own name here) is refused; the names it was given work.
    let rebound = curl(&["-H", &format!("Host: evil.example:{}", service.port())], &service.url("/healthz"));
    rebound.fails_with(421, "evil.example");
    let named = Service::start(&["--registry", &registry.host(), "--public-name", "hoist.example"]);
    let public = curl(&["-H", "Host: hoist.example"], &named.url("/healthz"));
    assert_eq!(public.status, 200, "{public:?}");

    // Nothing a client sends starts a log line of its own.
    let forged = upload(&service, &file, "x%0A1.2.3.4%20GET%20/forged", &[]);
    assert_eq!(forged.status, 400, "{forged:?}");
    let log = service.log();
    assert!(!log.lines().any(|l| l.starts_with("1.2.3.4")), "a forged line:\n{log}");
}

#[test]
fn the_uploader_credentials_go_to_the_registry_and_nowhere_else() {
    let behind = TestRegistry::builder().basic_auth("alice", "s3cret-Pa55").start();
    // A proxy that logs what reaches the registry.
    let registry = FaultProxy::start(behind.port(), vec![]);
    let service = Service::start(&["--registry", &registry.host()]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("creds");
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(fixture.clone()).build());
    let dest = format!("{}/team/app:1", registry.host());

    let anonymous = upload(&service, &file, &dest, &[]);
    anonymous.fails_with(401, "");
    assert!(anonymous.headers.to_ascii_lowercase().contains("www-authenticate: basic"), "{anonymous:?}");
    let wrong = upload(&service, &file, &dest, &["-u", "alice:wrong-password"]);
    wrong.fails_with(401, "");
    // The page asks in its own fields: no browser dialog.
    let page = upload(&service, &file, &dest, &["-u", "alice:wrong", "-H", "X-Hoist-Page: 1"]);
    assert_eq!(page.status, 401);
    assert!(!page.headers.to_ascii_lowercase().contains("www-authenticate"), "{page:?}");
    assert_no_tag(&behind, "team/app", "1");
    assert_eq!(registry.count("POST", "/blobs/uploads"), 0, "refused before a byte of the archive went anywhere");
    // The page asks before it sends the file, and hears the same.
    let check = curl(
        &["-X", "POST", "-u", "alice:wrong", "-H", "X-Hoist-Page: 1"],
        &service.url(&format!("/api/check?dest={dest}&size=10")),
    );
    check.fails_with(401, "");
    let good =
        curl(&["-X", "POST", "-u", "alice:s3cret-Pa55"], &service.url(&format!("/api/check?dest={dest}&size=10")));
    assert_eq!((good.status, good.json()["ok"].as_bool()), (200, Some(true)), "{good:?}");

    let right = upload(&service, &file, &dest, &["-u", "alice:s3cret-Pa55"]);
    right.pushed(&dest);
    copy_and_check_as(&dest, &fixture, Some("alice:s3cret-Pa55"));

    // A user name that would forge a log line is refused.
    let forged = upload(&service, &file, &dest, &["-u", "alice\n1.2.3.4 GET /forged 200:x"]);
    forged.fails_with(400, "control characters");
    // The log is read from the service's stderr as it comes.
    eventually(Duration::from_secs(10), "every request logged", || {
        service.log().lines().filter(|l| l.contains(" PUT /api/push ")).count() >= 5
    });
    let log = service.log();
    assert!(!log.contains("s3cret-Pa55") && !log.contains("wrong-password"), "a password in the log:\n{log}");
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(" PUT /api/push ")).collect();
    assert_eq!(requests.len(), 5, "one log line per request:\n{log}");
    assert!(requests[3].contains(" 200 ") && requests[3].contains("user=alice"), "{}", requests[3]);
}

/// Sends the headers and the first `sent` bytes of `body` as a PUT, and
/// returns the connection, still open.
fn start_upload(service: &Service, dest: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", service.port())).unwrap();
    let head = format!(
        "PUT /api/push?dest={dest} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
        service.port(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..sent]).unwrap();
    stream.flush().unwrap();
    stream
}

/// Sends the rest of the body and reads the answer's status and body.
fn finish_upload(mut stream: TcpStream, rest: &[u8]) -> (u16, String) {
    stream.write_all(rest).unwrap();
    read_answer(stream)
}

/// Reads an HTTP answer's status and body from `stream`.
fn read_answer(stream: TcpStream) -> (u16, String) {
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = Vec::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    answer.resize(length, 0);
    reader.read_exact(&mut answer).unwrap();
    (status, String::from_utf8(answer).unwrap())
}

#[test]
fn a_client_that_goes_away_cancels_its_push_and_the_service_stays_healthy() {
    let registry = TestRegistry::start();
    let service = Service::start(&["--registry", &registry.host()]);
    let fixture = image("cut");
    let body = DockerSaveClassic::new().image(fixture.clone()).build();
    let dest = format!("{}/team/app:1", registry.host());
    // Everything but the archive's last 100 bytes (end-of-archive padding,
    // after manifest.json): the layers are held in sessions and the images
    // known, yet the archive never ends, so nothing may be tagged.
    let stream = start_upload(&service, &dest, &body, body.len() - 100);
    eventually(Duration::from_secs(20), "the layers held", || registry.open_uploads() >= 2);
    drop(stream);
    eventually(Duration::from_secs(20), "every session cancelled", || registry.open_uploads() == 0);
    eventually(Duration::from_secs(10), "the push forgotten", || {
        curl(&[], &service.url("/healthz")).json()["uploads"] == 0
    });
    assert_no_tag(&registry, "team/app", "1");
    assert!(!service.log().contains("panicked"), "{}", service.log());
    eventually(Duration::from_secs(10), "the request logged", || {
        service.log().lines().any(|l| l.contains(" PUT /api/push 499 "))
    });

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.tar", &body);
    let digest = upload(&service, &file, &dest, &[]).pushed(&dest);
    assert_manifest_digest(&dest, &digest);
}

#[test]
fn a_client_that_stops_sending_is_answered_408_and_its_sessions_cancelled() {
    let registry = TestRegistry::start();
    let service = Service::start(&["--registry", &registry.host(), "--idle-timeout", "1"]);
    let body = DockerSaveClassic::new().image(image("idle")).build();
    let stream = start_upload(&service, &format!("{}/x:1", registry.host()), &body, body.len() / 2);
    let started = Instant::now();
    let (status, answer) = read_answer(stream);
    assert_eq!(status, 408, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20), "answered after the idle timeout, not much later");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(json["error"]["message"].as_str().unwrap().contains("sent nothing for 1s"), "{json}");
    eventually(Duration::from_secs(10), "sessions cancelled", || registry.open_uploads() == 0);
    assert_no_tag(&registry, "x", "1");
}

#[test]
fn a_registry_that_stops_answering_is_a_gateway_timeout() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::Stall).method("PUT").path("/manifests/")]);
    let service = Service::start(&["--registry", &proxy.host(), "--timeout", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(image("stall")).build());
    let answer = upload(&service, &file, &format!("{}/team/app:1", proxy.host()), &[]);
    answer.fails_with(504, "no progress");
    assert_no_tag(&registry, "team/app", "1");
}

#[test]
fn a_registry_that_fails_mid_push_is_a_bad_gateway_and_moves_no_tag() {
    let registry = TestRegistry::start();
    // Every manifest PUT is refused: the blobs go up, the tag must not move.
    let proxy =
        FaultProxy::start(registry.port(), vec![Rule::always(Fault::Status(500)).method("PUT").path("/manifests/")]);
    let service = Service::start(&["--registry", &proxy.host(), "--timeout", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(image("fails")).build());
    let answer = upload(&service, &file, &format!("{}/team/app:1", proxy.host()), &[]);
    let json = answer.fails_with(502, "500");
    assert_eq!(json["not_published"][0], format!("{}/team/app:1", proxy.host()), "{json}");
    assert_no_tag(&registry, "team/app", "1");
    assert_eq!(registry.open_uploads(), 0);
}

#[test]
fn several_uploads_at_once_each_get_their_answer() {
    let registry = TestRegistry::start();
    let service = Service::start(&["--registry", &registry.host(), "--max-uploads", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (image("alpha"), image("beta"));
    let file_a = write(dir.path(), "a.tar", &DockerSaveClassic::new().image(a.clone()).build());
    let file_b = write(dir.path(), "b.tar", &DockerSaveOci::new().image(b.clone()).build());
    let host = registry.host();
    // Different images, the same image twice, and two images racing for one tag.
    let uploads = [
        (&file_a, format!("{host}/team/a:1")),
        (&file_b, format!("{host}/team/b:1")),
        (&file_a, format!("{host}/team/a:2")),
        (&file_a, format!("{host}/team/race:1")),
        (&file_b, format!("{host}/team/race:1")),
    ];
    let answers: Vec<(String, Answer)> = std::thread::scope(|scope| {
        let handles: Vec<_> = uploads
            .iter()
            .map(|(file, dest)| {
                let service = &service;
                scope.spawn(move || (dest.clone(), upload(service, file, dest, &[])))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (dest, answer) in &answers {
        let digest = answer.pushed(dest);
        if !dest.contains("race") {
            assert_manifest_digest(dest, &digest);
        }
    }
    copy_and_check(&format!("{host}/team/a:2"), &a);
    copy_and_check(&format!("{host}/team/b:1"), &b);
    // The raced tag is one of the two images, whole.
    let raced = tools::skopeo_inspect(&format!("{host}/team/race:1"));
    let config = raced["Digest"].as_str().unwrap().to_owned();
    let winners: Vec<String> = answers[3..].iter().map(|(d, a)| a.pushed(d)).collect();
    assert!(winners.contains(&config), "{config} is one of {winners:?}");
    assert_eq!(registry.open_uploads(), 0);
}

#[test]
fn an_upload_over_the_limit_is_refused_and_shutdown_lets_the_one_in_flight_finish() {
    let registry = TestRegistry::start();
    let mut service = Service::start(&["--registry", &registry.host(), "--max-uploads", "1"]);
    let fixture = image("grace");
    let body = DockerSaveClassic::new().image(fixture.clone()).build();
    let dest = format!("{}/team/app:1", registry.host());
    let stream = start_upload(&service, &dest, &body, body.len() / 2);
    eventually(Duration::from_secs(20), "the first upload under way", || {
        curl(&[], &service.url("/healthz")).json()["uploads"] == 1
    });

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.tar", &body);
    let second = upload(&service, &file, &format!("{}/team/other:1", registry.host()), &[]);
    second.fails_with(503, "already in flight");
    assert!(second.headers.to_ascii_lowercase().contains("retry-after: 5"), "{second:?}");

    // SIGTERM: no new connections, the upload in flight finishes.
    service.signal("TERM");
    eventually(Duration::from_secs(10), "no longer accepting", || {
        TcpStream::connect(("127.0.0.1", service.port())).is_err()
    });
    let (status, answer) = finish_upload(stream, &body[body.len() / 2..]);
    assert_eq!(status, 200, "{answer}");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_manifest_digest(&dest, json["images"][0]["digest"].as_str().unwrap());
    assert_eq!(service.wait(Duration::from_secs(20)), Some(0), "{}", service.log());
    assert!(service.log().contains("no longer accepting"), "{}", service.log());
}

#[test]
fn a_stalled_upload_is_cancelled_when_shutdown_grace_runs_out() {
    let registry = TestRegistry::start();
    let mut service = Service::start(&["--registry", &registry.host(), "--shutdown-grace", "1"]);
    let body = DockerSaveClassic::new().image(image("stalled")).build();
    let dest = format!("{}/team/app:1", registry.host());
    let _stream = start_upload(&service, &dest, &body, body.len() / 2);
    eventually(Duration::from_secs(20), "a session opened", || registry.open_uploads() > 0);
    service.signal("TERM");
    assert_eq!(service.wait(Duration::from_secs(20)), Some(0), "{}", service.log());
    assert!(service.log().contains("cancelled 1 upload"), "{}", service.log());
    assert_eq!(registry.open_uploads(), 0, "its sessions cancelled");
    assert_no_tag(&registry, "team/app", "1");
}

#[test]
fn serves_https_with_the_given_certificate() {
    let registry = TestRegistry::start();
    let ca = TestCa::generate();
    let service = Service::start(&[
        "--registry",
        &registry.host(),
        "--tls-cert",
        path(&ca.server_cert()),
        "--tls-key",
        path(&ca.server_key()),
    ]);
    assert!(service.address.starts_with("https://"), "{}", service.address);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("tls");
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(fixture.clone()).build());
    let dest = format!("{}/team/app:1", registry.host());
    let answer = upload(&service, &file, &dest, &["--cacert", path(&ca.ca_cert())]);
    assert_manifest_digest(&dest, &answer.pushed(&dest));
    let untrusted = curl(&[], &service.url("/healthz"));
    assert_eq!(untrusted.status, 0, "curl refuses an untrusted certificate");
}

/// A WebDriver session on headless Chromium, spoken to with curl; quit and
/// chromedriver killed when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Self {
        tools::require("chromedriver", "chromium-driver");
        tools::require("chromium", "chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver up", || curl(&[], &format!("{base}/status")).status == 200);
        let mut browser = Self { driver, base, session: String::new() };
        let capabilities = serde_json::json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            // A phone-sized window: the page must work there.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,1100"],
        }}}});
        let session = browser.call("POST", "/session", Some(&capabilities));
        session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .clone_into(&mut browser.session);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{}", self.base, path.replace("{s}", &self.session));
        let data = body.map(ToString::to_string).unwrap_or_default();
        let mut args = vec!["-X", method, "-H", "Content-Type: application/json"];
        if body.is_some() {
            args.extend(["--data-binary", &data]);
        }
        let answer = curl(&args, &url);
        let json = answer.json();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {json}");
        json["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/session/{s}/element",
            Some(&serde_json::json!({"using": "css selector", "value": css})),
        );
        found.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &format!("/session/{{s}}/element/{element}/value"),
            Some(&serde_json::json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.call("POST", &format!("/session/{{s}}/element/{element}/click"), Some(&serde_json::json!({})));
    }

    fn text(&self, css: &str) -> String {
        let element = self.element(css);
        self.call("GET", &format!("/session/{{s}}/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for an element `css` to exist and show text, and returns it.
    /// Read in one script: the page replaces elements as it goes, and a
    /// reference found first could be gone when its text is asked.
    fn wait_for_text(&self, css: &str, limit: Duration) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e && e.offsetParent !== null ? e.innerText : '';",
            serde_json::json!(css)
        );
        let started = Instant::now();
        loop {
            let text = self.execute(&script).as_str().unwrap_or_default().to_owned();
            if !text.is_empty() {
                return text;
            }
            // On a timeout, say what the page shows.
            let shown = self.execute("return document.querySelector('main').innerText");
            assert!(started.elapsed() < limit, "no text in {css} within {limit:?}; the page shows:\n{shown}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` in the page; what it returns.
    fn execute(&self, script: &str) -> serde_json::Value {
        self.call("POST", "/session/{s}/execute/sync", Some(&serde_json::json!({ "script": script, "args": [] })))
    }

    fn screenshot(&self, to: &Path) {
        use base64::Engine;
        let png = self.call("GET", "/session/{s}/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = curl(&["-X", "DELETE"], &format!("{}/session/{}", self.base, self.session));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_pushes_an_archive_in_a_real_browser() {
    let registry = TestRegistry::builder().basic_auth("alice", "browser-Pa55").start();
    let service = Service::start(&["--registry", &registry.host()]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("browser");
    let file = write(dir.path(), "app.tar.gz", &gzip(&DockerSaveOci::new().image(fixture.clone()).build()));
    let dest = format!("{}/team/app:1.0", registry.host());

    let browser = Browser::start();
    browser.call("POST", "/session/{s}/url", Some(&serde_json::json!({ "url": service.url("/") })));
    assert!(browser.text("#registries").contains(&registry.host()), "the page lists the allowed registry");

    // Wrong password first: the error and its hint show, nothing is tagged.
    browser.type_into("#file", path(&file));
    browser.type_into("#dest", &dest);
    browser.type_into("#username", "alice");
    browser.type_into("#password", "wrong");
    browser.click("#push");
    let error = browser.wait_for_text("#error-message", Duration::from_secs(60));
    assert!(error.contains("401"), "the registry's refusal shows: {error}");
    assert!(browser.text("#error-hint").contains("Username and Password"), "the hint says what to do");
    assert_no_tag(&registry, "team/app", "1.0");

    // The right password, sent with the keyboard (Enter in the form).
    let password = browser.element("#password");
    browser.call("POST", &format!("/session/{{s}}/element/{password}/clear"), Some(&serde_json::json!({})));
    browser.type_into("#password", "browser-Pa55\u{E007}");
    let pushed = browser.wait_for_text("#pushed code", Duration::from_secs(60));
    let digest = pushed.strip_prefix(&format!("{dest}@")).unwrap_or_else(|| panic!("shown: {pushed}"));
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{pushed}");
    copy_and_check_as(&dest, &fixture, Some("alice:browser-Pa55"));
    assert_eq!(
        hoist_testkit::sha256(&tools::skopeo_raw_manifest_as(&dest, Some("alice:browser-Pa55"))),
        digest,
        "the page shows the registry's digest"
    );
    // Each layer's progress came from the server's event stream.
    let mut layers = String::new();
    eventually(Duration::from_secs(10), "both layers reported pushed", || {
        layers = browser.text("#layers");
        layers.matches("pushed").count() >= 2
    });
    assert!(browser.text("#upload-text").contains("pushed in"), "the upload's own progress");

    // Usable at a phone's width: nothing wider than the window.
    assert_eq!(browser.execute("return document.documentElement.scrollWidth <= window.innerWidth"), true);
    // And with a keyboard: Tab goes from Destination to Username to Password.
    browser.type_into("#dest", "\u{E004}");
    assert_eq!(browser.execute("return document.activeElement.id"), "username");
    browser.type_into("#username", "\u{E004}");
    assert_eq!(browser.execute("return document.activeElement.id"), "password");
    // The Copy button reacts (headless Chromium may refuse the clipboard: then it says to copy by hand).
    browser.click("#pushed button");
    let copy = browser.text("#pushed button");
    assert!(copy == "Copied" || copy == "Select and copy it", "{copy}");

    let shot = std::env::var_os("HOIST_SCREENSHOT").map_or_else(|| dir.path().join("serve.png"), PathBuf::from);
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a real screenshot");

    // Every other layout through the page too: a classic `docker save`, an
    // OCI layout, podman's docker-archive, a zstd-wrapped archive.
    let classic = DockerSaveClassic::new().image(fixture.clone()).build();
    let layouts = [
        ("classic.tar", classic.clone()),
        ("oci.tar", OciArchive::new().image(fixture.clone()).build()),
        ("podman.tar", DockerArchive::new().image(fixture.clone()).build()),
        ("classic.tar.zst", zstd(&classic)),
    ];
    for (index, (name, bytes)) in layouts.iter().enumerate() {
        let file = write(dir.path(), name, bytes);
        let dest = format!("{}/team/app:layout-{index}", registry.host());
        browser.type_into("#file", path(&file));
        let field = browser.element("#dest");
        browser.call("POST", &format!("/session/{{s}}/element/{field}/clear"), Some(&serde_json::json!({})));
        browser.type_into("#dest", &dest);
        browser.click("#push");
        let mut shown = String::new();
        eventually(Duration::from_secs(60), &format!("{name} pushed from the page"), || {
            shown = browser.wait_for_text("#pushed code", Duration::from_secs(60));
            shown.starts_with(&format!("{dest}@"))
        });
        let digest = shown.rsplit('@').next().unwrap();
        assert_eq!(
            hoist_testkit::sha256(&tools::skopeo_raw_manifest_as(&dest, Some("alice:browser-Pa55"))),
            digest,
            "{name}"
        );
        copy_and_check_as(&dest, &fixture, Some("alice:browser-Pa55"));
    }
}

#[test]
fn an_upload_to_harbor_creates_its_project_with_the_uploader_credentials() {
    use hoist_testkit::harbor::{ADMIN, DEVELOPER, TestHarbor};
    let harbor = TestHarbor::start();
    let service = Service::start(&["--registry", &harbor.host()]);
    let dir = tempfile::tempdir().unwrap();
    let fixture = image("harbor");
    let file = write(dir.path(), "app.tar", &DockerSaveClassic::new().image(fixture.clone()).build());
    let developer = format!("{}:{}", DEVELOPER.0, DEVELOPER.1);
    let dest = format!("{}/team/app:1.0", harbor.host());
    let answer = upload(&service, &file, &dest, &["-u", &developer]);
    answer.pushed(&dest);
    let created = &answer.json()["created"];
    assert_eq!(created[0]["name"], "team", "the answer says what was made: {created}");
    let team = harbor.project("team").expect("the project exists");
    assert!(!team.public, "private, as hoist push makes it");
    assert_eq!(team.owner, DEVELOPER.0, "made as the uploader");
    copy_and_check_as(&dest, &fixture, Some(&format!("{}:{}", ADMIN.0, ADMIN.1)));
}

#[test]
fn the_page_takes_a_dropped_file_and_cancels_an_upload() {
    let behind = TestRegistry::start();
    // A slow registry (every chunk waits), so the upload is still going when Cancel is pressed.
    let registry = FaultProxy::start(behind.port(), vec![Rule::always(Fault::Delay { ms: 700 }).method("PATCH")]);
    let service = Service::start(&["--registry", &registry.host()]);
    let dir = tempfile::tempdir().unwrap();
    // 24 MiB that does not compress: more than the sockets between page and service hold.
    let big = ImageFixture::new().tag("big:1").layer(incompressible_layer(99, 24 << 20));
    let file = write(dir.path(), "big.tar", &DockerSaveClassic::new().image(big).build());
    let browser = Browser::start();
    browser.call("POST", "/session/{s}/url", Some(&serde_json::json!({ "url": service.url("/") })));

    // Drag and drop: a file dropped on the drop zone becomes the chosen file.
    let dropped = browser.execute(
        "const t = new DataTransfer(); t.items.add(new File(['x'], 'dropped.tar'));
         document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: t, bubbles: true, cancelable: true }));
         return document.getElementById('file').files[0].name;",
    );
    assert_eq!(dropped, "dropped.tar");

    let dest = format!("{}/team/big:1", registry.host());
    browser.type_into("#file", path(&file));
    browser.type_into("#dest", &dest);
    browser.click("#push");
    eventually(Duration::from_secs(30), "the upload under way", || {
        browser.execute("return document.getElementById('upload-bar').value > 0").as_bool() == Some(true)
    });
    browser.click("#cancel");
    let message = browser.wait_for_text("#error-message", Duration::from_secs(30));
    assert!(message.contains("cancelled"), "{message}");
    eventually(Duration::from_secs(30), "the push stopped and its sessions cancelled", || {
        behind.open_uploads() == 0 && curl(&[], &service.url("/healthz")).json()["uploads"] == 0
    });
    assert_no_tag(&behind, "team/big", "1");
}

#[test]
fn settings_no_upload_could_use_are_refused_at_start() {
    // Images go up in Docker's format, which has no zstd layers.
    let zstd = crate::support::hoist_run(&["serve", "--registry", "127.0.0.1:5000", "--compression", "zstd"]);
    zstd.fails_with(2, "zstd");
    let registry = crate::support::hoist_run(&["serve", "--registry", "not a registry"]);
    registry.fails_with(2, "not a registry");
}
