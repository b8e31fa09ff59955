//! Manifests against a real distribution registry: `Content-Type` on PUT for
//! all four manifest types, `Accept` on GET and HEAD, `Docker-Content-Digest`
//! checks, the 4 MiB limit both ways, and `Warning` headers. The fault proxy
//! logs what was sent and injects the answers no local registry gives.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hoist_oci::{Descriptor, Digest, ManifestBuilder, ManifestFormat, RawBlob, Reference, media_type};
use hoist_registry::{BytesSource, Client, ClientOptions, ErrorKind, MAX_MANIFEST_SIZE, Repository, UploadOptions};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry};
use serde_json::json;

fn repo(client: &Client, host: &str, name: &str) -> Repository {
    client.repository(&Reference::parse(&format!("{host}/{name}:1")).unwrap())
}

fn client() -> Client {
    Client::new(ClientOptions::default()).unwrap()
}

/// Pushes a config and a layer for `format` and returns an image manifest referencing them.
async fn image(repo: &Repository, format: ManifestFormat, seed: &str) -> RawBlob {
    let config = RawBlob::new(
        format.config_media_type(),
        format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":"{seed}"}}"#
        )
        .into_bytes(),
    );
    let layer = Bytes::from(format!("layer bytes for {seed}").repeat(100));
    for blob in [Bytes::from(config.bytes.clone()), layer.clone()] {
        repo.upload_blob(&BytesSource::new(blob), &UploadOptions::default()).await.unwrap();
    }
    ManifestBuilder::new(format, config.descriptor())
        .layer(Descriptor {
            media_type: format.layer_media_type(true).into(),
            digest: Digest::of(&layer),
            size: layer.len() as u64,
        })
        .build()
}

/// A manifest list or index naming `child` for linux/amd64.
fn list(list_type: &str, child: &RawBlob) -> RawBlob {
    let document = json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [{
            "mediaType": child.media_type,
            "digest": child.digest.to_string(),
            "size": child.size(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    RawBlob::new(list_type, serde_json::to_vec_pretty(&document).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_manifest_type_goes_up_with_its_content_type_and_comes_back_byte_identical() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let docker = image(&repo, ManifestFormat::Docker, "docker").await;
    let oci = image(&repo, ManifestFormat::Oci, "oci").await;
    // Lists are pushed after their children: distribution checks that each child exists.
    let cases = [
        ("docker", docker.clone()),
        ("oci", oci.clone()),
        ("docker-list", list(media_type::DOCKER_MANIFEST_LIST, &docker)),
        ("oci-index", list(media_type::OCI_INDEX, &oci)),
    ];
    for (tag, manifest) in &cases {
        let before = proxy.log().len();
        let digest = repo.put_manifest(tag, manifest).await.unwrap();
        assert_eq!(digest, manifest.digest);
        let put = &proxy.log()[before];
        assert_eq!((put.method.as_str(), put.status), ("PUT", 201), "{put:?}");
        assert_eq!(put.content_type.as_deref(), Some(manifest.media_type.as_str()), "the exact Content-Type");
        assert_eq!(put.body_len, manifest.bytes.len());

        // skopeo, the independent reader, gets exactly the bytes that were sent.
        let served = hoist_testkit::tools::skopeo_raw_manifest(&format!("{}/app:{tag}", registry.host()));
        assert_eq!(served, manifest.bytes, "{tag}: the registry serves the bytes pushed");

        let before = proxy.log().len();
        let fetched = repo.get_manifest(tag).await.unwrap().expect("the tag exists");
        assert_eq!(fetched, *manifest, "{tag}: same bytes, digest and media type");
        let by_digest = repo.get_manifest(&manifest.digest.to_string()).await.unwrap().unwrap();
        assert_eq!(by_digest, *manifest);
        let info = repo.head_manifest(tag).await.unwrap().expect("the tag exists");
        assert_eq!(info.digest, manifest.digest);
        assert_eq!(info.size, manifest.size());
        assert_eq!(info.media_type, manifest.media_type);
        let reads = &proxy.log()[before..];
        assert_eq!(reads.iter().map(|l| l.method.as_str()).collect::<Vec<_>>(), ["GET", "GET", "HEAD"]);
        for read in reads {
            assert_eq!(read.accept.as_deref(), Some(media_type::MANIFEST_ACCEPT), "{read:?}");
        }
    }
    for wanted in
        [media_type::OCI_MANIFEST, media_type::OCI_INDEX, media_type::DOCKER_MANIFEST, media_type::DOCKER_MANIFEST_LIST]
    {
        assert!(media_type::MANIFEST_ACCEPT.split(", ").any(|t| t == wanted), "Accept names {wanted}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn head_resolves_a_tag_in_one_request_and_knows_absence() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let manifest = image(&repo, ManifestFormat::Oci, "head").await;
    repo.put_manifest("v1", &manifest).await.unwrap();
    let before = proxy.log().len();
    let info = repo.head_manifest("v1").await.unwrap().unwrap();
    assert_eq!(info.digest, manifest.digest);
    let requests = &proxy.log()[before..];
    assert_eq!(requests.len(), 1, "a tag resolves with one HEAD: {requests:?}");
    assert_eq!(requests[0].method, "HEAD");
    assert_eq!(repo.head_manifest("missing").await.unwrap(), None);
    assert_eq!(repo.get_manifest("missing").await.unwrap(), None);
    let absent = Digest::of(b"never pushed").to_string();
    assert_eq!(repo.head_manifest(&absent).await.unwrap(), None);
}

fn wrong_digest() -> String {
    Digest::of(b"something else").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_answered_with_another_digest_is_a_mismatch() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            Rule::always(Fault::SetHeader { name: "Docker-Content-Digest".into(), value: wrong_digest() })
                .method("PUT")
                .path("/manifests/"),
        ],
    );
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let manifest = image(&repo, ManifestFormat::Docker, "put").await;
    let error = repo.put_manifest("v1", &manifest).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Mismatch, "{error}");
    let text = error.to_string();
    assert!(text.contains(&wrong_digest()) && text.contains(&manifest.digest.to_string()), "{text}");
    assert!(error.hint().is_some_and(|h| h.contains("exact bytes")), "{:?}", error.hint());
    assert_eq!(proxy.count("PUT", "/manifests/"), 1, "a mismatch is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_or_head_answered_with_another_digest_is_a_mismatch() {
    let registry = TestRegistry::start();
    let client = client();
    let manifest = image(&repo(&client, &registry.host(), "app"), ManifestFormat::Oci, "get").await;
    repo(&client, &registry.host(), "app").put_manifest("v1", &manifest).await.unwrap();
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            Rule::always(Fault::SetHeader { name: "Docker-Content-Digest".into(), value: wrong_digest() })
                .path("/manifests/"),
        ],
    );
    let repo = repo(&client, &proxy.host(), "app");
    for reference in ["v1".to_owned(), manifest.digest.to_string()] {
        let error = repo.get_manifest(&reference).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Mismatch, "{error}");
        assert!(error.to_string().contains(&wrong_digest()), "{error}");
    }
    // HEAD has no body to hash: a digest reference is checked against the header.
    let error = repo.head_manifest(&manifest.digest.to_string()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Mismatch, "{error}");
    // For a tag, the header is all there is: HEAD reports it as it is.
    assert_eq!(repo.head_manifest("v1").await.unwrap().unwrap().digest.to_string(), wrong_digest());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_answered_without_location_succeeds() {
    let registry = TestRegistry::start();
    let rule = Rule::always(Fault::RemoveHeader { name: "Location".into() }).method("PUT").path("/manifests/");
    let proxy = FaultProxy::start(registry.port(), vec![rule]);
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let manifest = image(&repo, ManifestFormat::Docker, "bare").await;
    assert_eq!(repo.put_manifest("v1", &manifest).await.unwrap(), manifest.digest);
    assert_eq!(proxy.faulted().len(), 1, "the answer had its Location removed");
    assert_eq!(hoist_testkit::tools::skopeo_raw_manifest(&format!("{}/app:v1", registry.host())), manifest.bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_tag_is_refused_before_any_request() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let repo = repo(&client(), &proxy.host(), "app");
    let manifest = RawBlob::new(media_type::OCI_MANIFEST, b"{}".to_vec());
    for bad in ["../../blobs/uploads", "v1?x=1", "-v1"] {
        assert_eq!(repo.put_manifest(bad, &manifest).await.unwrap_err().kind(), ErrorKind::Rejected);
        assert_eq!(repo.get_manifest(bad).await.unwrap_err().kind(), ErrorKind::Rejected);
        assert_eq!(repo.head_manifest(bad).await.unwrap_err().kind(), ErrorKind::Rejected);
    }
    assert!(proxy.log().is_empty(), "{:?}", proxy.log());
}

/// An OCI manifest of exactly `size` bytes, padded with an annotation.
fn manifest_of_size(base: &RawBlob, size: usize) -> RawBlob {
    let mut document: serde_json::Value = serde_json::from_slice(&base.bytes).unwrap();
    document["annotations"] = json!({ "pad": "" });
    let empty = serde_json::to_vec(&document).unwrap().len();
    document["annotations"]["pad"] = json!("x".repeat(size - empty));
    let bytes = serde_json::to_vec(&document).unwrap();
    assert_eq!(bytes.len(), size);
    RawBlob::new(media_type::OCI_MANIFEST, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_up_to_4mib_are_pushed_and_larger_ones_never_sent() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let base = image(&repo, ManifestFormat::Oci, "big").await;

    let largest = manifest_of_size(&base, MAX_MANIFEST_SIZE);
    repo.put_manifest("largest", &largest).await.unwrap();
    assert_eq!(repo.get_manifest("largest").await.unwrap().unwrap(), largest, "4 MiB exactly is read back whole");

    let before = proxy.log().len();
    let error = repo.put_manifest("too-large", &manifest_of_size(&base, MAX_MANIFEST_SIZE + 1)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    assert!(error.to_string().contains("4194305 bytes"), "{error}");
    assert_eq!(proxy.log().len(), before, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_reads_stop_above_4mib() {
    let registry = TestRegistry::start();
    let body = Bytes::from(vec![b' '; MAX_MANIFEST_SIZE + 1]);
    let json = ("content-type".to_owned(), media_type::OCI_MANIFEST.to_owned());
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            // No Content-Length: the body has to be counted as it arrives.
            Rule::always(Fault::Serve { status: 200, headers: vec![json.clone()], body: body.clone() })
                .path("/manifests/streamed"),
            Rule::always(Fault::Serve {
                status: 200,
                headers: vec![json, ("content-length".into(), body.len().to_string())],
                body,
            })
            .path("/manifests/announced"),
        ],
    );
    let repo = repo(&client(), &proxy.host(), "app");
    for tag in ["streamed", "announced"] {
        let error = repo.get_manifest(tag).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Protocol, "{error}");
        assert!(error.to_string().contains(&format!("larger than {MAX_MANIFEST_SIZE} bytes")), "{error}");
    }
    let served = proxy.log();
    assert_eq!(served[0].status, 200);
    assert_eq!(served.len(), 2, "a refusal is not retried: {served:?}");
}

/// Everything logged at warn level or above, as the binary would print it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn warnings_are_logged_once_per_distinct_text_and_change_nothing() {
    let registry = TestRegistry::start();
    let warning = |text: &str| Fault::AddHeader { name: "Warning".into(), value: format!(r#"299 - "{text}""#) };
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            Rule::always(Fault::AddHeader {
                name: "Warning".into(),
                value: r#"299 - "repository app is deprecated", 110 - "Response is stale""#.into(),
            })
            .path("/blobs/"),
            Rule::always(warning("manifest schema is old")).path("/manifests/"),
        ],
    );
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let manifest = image(&repo, ManifestFormat::Docker, "warn").await;
    let again = image(&repo, ManifestFormat::Docker, "warn").await;
    assert_eq!(again, manifest);
    repo.put_manifest("v1", &manifest).await.unwrap();
    assert_eq!(repo.get_manifest("v1").await.unwrap().unwrap(), manifest, "a warning changes nothing");
    repo.head_manifest("v1").await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(proxy.count("HEAD", "/blobs/") >= 4 && proxy.count("GET", "/manifests/") == 1, "{:?}", proxy.log());
    assert_eq!(log.matches("repository app is deprecated").count(), 1, "{log}");
    assert_eq!(log.matches("manifest schema is old").count(), 1, "{log}");
    assert!(log.contains(&format!("registry {} warns", proxy.host())), "{log}");
    assert!(!log.contains("stale"), "only 299 warnings are for the user: {log}");
}
