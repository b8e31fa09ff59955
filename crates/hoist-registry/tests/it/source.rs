//! `RegistryBlob`: a blob read from one real registry as the source of an
//! upload into another, through the fault proxy where a test needs faults
//! or request logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_oci::{Digest, Reference};
use hoist_registry::{
    BlobSource, BytesSource, Client, ClientOptions, DownloadError, ErrorKind, RegistryBlob, Repository, RetryPolicy,
    UploadAction, UploadError, UploadOptions,
};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry};

fn client() -> Client {
    Client::new(ClientOptions {
        retry: RetryPolicy { min_delay: Duration::from_millis(10), ..RetryPolicy::default() },
        ..ClientOptions::default()
    })
    .unwrap()
}

fn reference(host: &str, name: &str) -> Reference {
    Reference::parse(&format!("{host}/{name}:1")).unwrap()
}

/// Bytes that do not repeat, so a misplaced piece changes the digest.
fn blob(size: usize) -> Bytes {
    (0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>().into()
}

/// Puts `bytes` into `name` of `registry`; returns its digest.
async fn seed(registry: &TestRegistry, name: &str, bytes: &Bytes) -> Digest {
    let repo = client().repository(&reference(&registry.host(), name));
    repo.upload_blob(&BytesSource::new(bytes.clone()), &UploadOptions::default()).await.unwrap().digest
}

/// A pull-only handle on `name` at `host`, as a copy reads its source.
fn source_repo(client: &Client, host: &str, name: &str) -> Repository {
    client.repository_for_pull(&reference(host, name))
}

fn assert_stored(registry: &TestRegistry, name: &str, bytes: &[u8]) {
    let digest = hoist_testkit::sha256(bytes);
    let (status, body) = registry.get(&format!("/v2/{name}/blobs/{digest}"));
    assert_eq!(status, 200, "{digest} is in {name}");
    assert_eq!(body, bytes);
}

async fn read_all(source: &RegistryBlob, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut stream = source.open(offset)?;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_streams_from_one_registry_into_another() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let bytes = blob(3 << 20);
    let digest = seed(&from, "team/app", &bytes).await;
    let client = client();
    let counted = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&counted);
    let source = RegistryBlob::new(source_repo(&client, &from.host(), "team/app"), digest.clone(), bytes.len() as u64)
        .with_progress(Box::new(move |n| {
            seen.fetch_add(n, Ordering::Relaxed);
        }));
    let target = client.repository(&reference(&to.host(), "prod/app"));
    let outcome = target.upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    assert_eq!(outcome.digest, digest);
    assert_eq!(counted.load(Ordering::Relaxed), bytes.len() as u64, "progress counts every byte once");
    assert_stored(&to, "prod/app", &bytes);
    // Again: the destination has it, and the source is not read.
    let again = target.upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(again.action, UploadAction::Existed);
}

/// Reopened past the start (where an upload stands after a failure), the
/// stream hands out exactly the rest, fetched with `Range` from the last
/// hash state kept at or below the offset, and still verifies the digest.
#[tokio::test(flavor = "multi_thread")]
async fn a_reopened_source_resumes_from_a_kept_hash_state() {
    let registry = TestRegistry::start();
    let bytes = blob(20 << 20);
    let digest = seed(&registry, "app", &bytes).await;
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let source = RegistryBlob::new(source_repo(&client, &proxy.host(), "app"), digest, bytes.len() as u64);
    // Nothing kept yet: from the start, handing out only the tail.
    let offset = 13 << 20;
    assert_eq!(read_all(&source, offset).await.unwrap(), &bytes[offset as usize..]);
    assert_eq!(proxy.log().last().unwrap().range, None, "no state kept yet: read from byte 0");
    // Now states are kept: the same offset costs a Range GET from at most 8 MiB below it.
    assert_eq!(read_all(&source, offset).await.unwrap(), &bytes[offset as usize..]);
    let range = proxy.log().last().unwrap().range.clone().expect("a Range GET");
    let from: u64 = range.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
    assert!(from <= offset && offset - from <= 8 << 20 && from > 0, "{range}");
    assert_eq!(read_all(&source, 0).await.unwrap(), bytes, "and the whole from 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_source_download_resumes_with_range() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let bytes = blob(2 << 20);
    let digest = seed(&from, "app", &bytes).await;
    let flaky = FaultProxy::start(from.port(), vec![Rule::first(1, Fault::TruncateResponse(700_000)).method("GET")]);
    let client = client();
    let source = RegistryBlob::new(source_repo(&client, &flaky.host(), "app"), digest, bytes.len() as u64);
    let outcome =
        client.repository(&reference(&to.host(), "app")).upload_blob(&source, &UploadOptions::default()).await;
    assert_eq!(outcome.unwrap().action, UploadAction::Uploaded);
    let gets: Vec<_> = flaky.log().into_iter().filter(|l| l.method == "GET").collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=700000-"));
    assert_stored(&to, "app", &bytes);
}

/// Wrong bytes from the source (the right length, another digest) are
/// never committed: the upload fails with the source's error and the
/// destination has no such blob.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_bytes_from_the_source_are_never_committed() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    for (mode, options) in [
        ("monolithic", UploadOptions::default()),
        ("streamed", UploadOptions { monolithic_max: 0, ..UploadOptions::default() }),
        ("chunked", UploadOptions { chunk_size: Some(256 << 10), ..UploadOptions::default() }),
    ] {
        let bytes = blob(1 << 20);
        let digest = seed(&from, "app", &bytes).await;
        let mut lie = bytes.to_vec();
        lie[(1 << 20) - 1] ^= 1;
        let lying = FaultProxy::start(
            from.port(),
            vec![
                Rule::always(Fault::Serve { status: 200, headers: vec![], body: Bytes::from(lie) })
                    .method("GET")
                    .path("/blobs/"),
            ],
        );
        let dest = FaultProxy::start(to.port(), vec![]);
        let client = client();
        let source = RegistryBlob::new(source_repo(&client, &lying.host(), "app"), digest.clone(), 1 << 20);
        let target = client.repository(&reference(&dest.host(), "app"));
        let error = target.upload_blob(&source, &options).await.unwrap_err();
        assert!(matches!(error, UploadError::Source(_)), "{mode}: {error}");
        assert!(matches!(source.take_failure(), Some(DownloadError::Digest { .. })), "{mode}");
        assert_eq!(target.blob_exists(&digest).await.unwrap(), None, "{mode}: not committed");
        assert!(
            !dest.log().iter().any(|l| l.query.contains("digest=") && l.status == 201),
            "{mode}: no commit: {:?}",
            dest.log()
        );
    }
}

/// A blob shorter than its descriptor says (a manifest with a wrong size)
/// is a mismatch, not an upload cut short and retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_shorter_than_its_descriptor_is_a_mismatch() {
    let (from, to) = (TestRegistry::start(), TestRegistry::start());
    let bytes = blob(100_000);
    let digest = seed(&from, "app", &bytes).await;
    let client = client();
    let source = RegistryBlob::new(source_repo(&client, &from.host(), "app"), digest.clone(), 100_010);
    let target = client.repository(&reference(&to.host(), "app"));
    assert!(target.upload_blob(&source, &UploadOptions::default()).await.is_err());
    match source.take_failure() {
        Some(DownloadError::Registry(error)) => {
            assert_eq!(error.kind(), ErrorKind::Mismatch);
            assert!(error.to_string().contains("100000 bytes"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(target.blob_exists(&digest).await.unwrap(), None);
}
