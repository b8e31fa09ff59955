//! The registry client against a real distribution registry: uploads
//! (`Repository::upload_blob`) and downloads (`Repository::download_blob`),
//! through the fault proxy where a test needs faults or request counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_oci::{Digest, Reference};
use hoist_registry::{
    BlobSource, BlobStream, BytesSource, Client, ClientOptions, OpenUploads, RetryEvent, RetryObserver, RetryPolicy,
    UploadAction, UploadOptions,
};
use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry};

fn client() -> Client {
    client_observed(None)
}

fn client_observed(observer: Option<RetryObserver>) -> Client {
    Client::new(ClientOptions {
        retry: RetryPolicy { min_delay: Duration::from_millis(10), ..RetryPolicy::default() },
        on_retry: observer,
        ..ClientOptions::default()
    })
    .unwrap()
}

fn repo(client: &Client, host: &str, name: &str) -> hoist_registry::Repository {
    client.repository(&Reference::parse(&format!("{host}/{name}:1")).unwrap())
}

/// Bytes that do not repeat, so a misplaced chunk changes the digest.
fn blob(size: usize) -> Bytes {
    (0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>().into()
}

/// The registry (not the proxy) serves `digest` in `name` with exactly these bytes.
fn assert_stored(registry: &TestRegistry, name: &str, bytes: &[u8]) {
    let digest = hoist_testkit::sha256(bytes);
    let (status, body) = registry.get(&format!("/v2/{name}/blobs/{digest}"));
    assert_eq!(status, 200, "{digest} is in {name}");
    assert_eq!(hoist_testkit::sha256(&body), digest);
}

/// A source whose digest is known only once it has been read to the end,
/// as a compressor's output is; counts how often it was opened.
struct LateDigest {
    bytes: Bytes,
    read_whole: Arc<Mutex<bool>>,
    opens: AtomicUsize,
}

impl LateDigest {
    fn new(bytes: Bytes) -> Self {
        Self { bytes, read_whole: Arc::default(), opens: AtomicUsize::new(0) }
    }
}

impl BlobSource for LateDigest {
    fn open(&self, offset: u64) -> std::io::Result<BlobStream> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let pieces: Vec<std::io::Result<Bytes>> =
            self.bytes.slice(offset as usize..).chunks(10_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let done = Arc::clone(&self.read_whole);
        let end = futures_util::stream::once(async move {
            *done.lock().unwrap() = true;
            None::<std::io::Result<Bytes>>
        });
        Ok(futures_util::stream::iter(pieces.into_iter().map(Some)).chain(end).filter_map(|x| async { x }).boxed())
    }

    fn size(&self) -> Option<u64> {
        None
    }

    fn digest(&self) -> Option<Digest> {
        (*self.read_whole.lock().unwrap()).then(|| Digest::of(&self.bytes))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_present_blob_costs_one_head() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let repo = repo(&client, &proxy.host(), "app");
    let source = BytesSource::new(blob(50_000));
    let first = repo.upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(first.action, UploadAction::Uploaded);
    let before = proxy.log().len();
    let again = repo.upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(again.action, UploadAction::Existed);
    assert_eq!(again.size, Some(50_000));
    let requests = &proxy.log()[before..];
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "HEAD");
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_uploads_put_once_with_a_content_length() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let bytes = blob(300_000);
    let outcome = repo(&client, &proxy.host(), "app")
        .upload_blob(&BytesSource::new(bytes.clone()), &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    let puts: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "PUT").collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].content_length.as_deref(), Some("300000"), "a real Content-Length");
    assert_eq!(puts[0].transfer_encoding, None, "not chunked transfer encoding");
    assert!(puts[0].query.contains("_state=") && puts[0].query.contains("&digest=sha256%3A"), "{}", puts[0].query);
    assert_eq!(proxy.count("PATCH", "/v2/app/"), 0);
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_send_inclusive_content_ranges() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let bytes = blob(256_000);
    let options = UploadOptions { chunk_size: Some(102_400), ..UploadOptions::default() };
    let source = LateDigest::new(bytes.clone());
    let outcome = repo(&client, &proxy.host(), "app").upload_blob(&source, &options).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    assert_eq!(outcome.bytes_sent, 256_000);
    let ranges: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "PATCH").map(|l| l.content_range).collect();
    assert_eq!(
        ranges,
        [Some("0-102399".to_owned()), Some("102400-204799".to_owned()), Some("204800-255999".to_owned())]
    );
    let put = proxy.log().into_iter().find(|l| l.method == "PUT").unwrap();
    assert_eq!(put.body_len, 0, "the closing PUT carries only the digest");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_costs_one_post() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let bytes = blob(80_000);
    let source = BytesSource::new(bytes.clone());
    repo(&client, &proxy.host(), "first").upload_blob(&source, &UploadOptions::default()).await.unwrap();
    let before = proxy.log().len();
    let options = UploadOptions { mount_from: Some("first".into()), ..UploadOptions::default() };
    let outcome = repo(&client, &proxy.host(), "second").upload_blob(&source, &options).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Mounted);
    let requests = &proxy.log()[before..];
    let methods: Vec<&str> = requests.iter().map(|l| l.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "POST"], "{requests:?}");
    assert!(requests[1].query.contains("mount=sha256%3A") && requests[1].query.contains("from=first"));
    assert_stored(&registry, "second", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_mount_carries_on_in_the_session_it_opened() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![]);
    let client = client();
    let bytes = blob(10_000);
    let options = UploadOptions { mount_from: Some("nowhere".into()), ..UploadOptions::default() };
    let outcome =
        repo(&client, &proxy.host(), "app").upload_blob(&BytesSource::new(bytes.clone()), &options).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    assert_eq!(proxy.count("POST", "/v2/app/blobs/uploads/"), 1, "the 202 session is used, not a new one");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_errors_are_retried_and_reported() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        registry.port(),
        vec![
            Rule::first(1, Fault::Status(502)),
            Rule::first(1, Fault::Status(503)),
            Rule::first(1, Fault::Status(504)),
        ],
    );
    let events = Arc::new(Mutex::new(Vec::<RetryEvent>::new()));
    let seen = Arc::clone(&events);
    let client = client_observed(Some(RetryObserver::new(move |e| seen.lock().unwrap().push(e.clone()))));
    let bytes = blob(20_000);
    let source = BytesSource::new(bytes.clone());
    let outcome = repo(&client, &proxy.host(), "app").upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(outcome.retries, 3);
    let events = events.lock().unwrap().clone();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["HTTP 502", "HTTP 503", "HTTP 504"]);
    assert_eq!(events.iter().map(|e| e.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(events.iter().all(|e| e.action.contains("check for blob")), "{events:?}");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_replaces_the_computed_delay() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(
        registry.port(),
        vec![Rule::first(1, Fault::TooManyRequests { retry_after: "1".into() }).method("POST")],
    );
    let events = Arc::new(Mutex::new(Vec::<RetryEvent>::new()));
    let seen = Arc::clone(&events);
    let client = client_observed(Some(RetryObserver::new(move |e| seen.lock().unwrap().push(e.clone()))));
    let bytes = blob(1000);
    repo(&client, &proxy.host(), "app")
        .upload_blob(&BytesSource::new(bytes.clone()), &UploadOptions::default())
        .await
        .unwrap();
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].delay, Duration::from_secs(1), "the registry's Retry-After, not the 10 ms backoff");
    assert_eq!(events[0].reason, "HTTP 429");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_and_quota_errors_are_not_retried() {
    for (code, message) in
        [("DENIED", "requested access to the resource is denied"), ("UNKNOWN", "storage quota exceeded")]
    {
        let registry = TestRegistry::start();
        let proxy = FaultProxy::start(
            registry.port(),
            vec![
                Rule::always(Fault::ErrorCode { status: 503, code: code.into(), message: message.into() })
                    .method("POST"),
            ],
        );
        let client = client();
        let error = repo(&client, &proxy.host(), "app")
            .upload_blob(&BytesSource::new(blob(100)), &UploadOptions::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(proxy.count("POST", "/blobs/uploads/"), 1, "{code} is final");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_chunk_resumes_where_the_registry_stands() {
    let registry = TestRegistry::start();
    let proxy =
        FaultProxy::start(registry.port(), vec![Rule::first(1, Fault::DropBodyAfter(10_000)).method("PATCH").skip(2)]);
    let client = client();
    let bytes = blob(256_000);
    let source = LateDigest::new(bytes.clone());
    let options = UploadOptions { chunk_size: Some(102_400), ..UploadOptions::default() };
    let outcome = repo(&client, &proxy.host(), "app").upload_blob(&source, &options).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    assert!(outcome.retries >= 1);
    let log = proxy.log();
    let dropped = log.iter().position(|l| l.status == 0).expect("a dropped request");
    assert_eq!(log[dropped + 1].method, "GET", "asks where the upload stands: {log:?}");
    assert_eq!(log[dropped + 2].content_range.as_deref(), Some("204800-255999"), "resumes at the registry's offset");
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 1, "the same session carries on");
    assert_eq!(source.opens.load(Ordering::SeqCst), 1, "the last chunk is re-sent from memory");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_stream_is_rebuilt_from_its_source() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::first(1, Fault::DropBodyAfter(30_000)).method("PATCH")]);
    let client = client();
    let bytes = blob(200_000);
    let source = LateDigest::new(bytes.clone());
    let outcome = repo(&client, &proxy.host(), "app").upload_blob(&source, &UploadOptions::default()).await.unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    assert_eq!(source.opens.load(Ordering::SeqCst), 2, "the stream cannot be replayed; the source is reopened");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_413_falls_back_to_chunks_small_enough() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::TooLarge { above: 150_000 })]);
    let client = client();
    let bytes = blob(400_000);
    let outcome = repo(&client, &proxy.host(), "app")
        .upload_blob(&BytesSource::new(bytes.clone()), &UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.action, UploadAction::Uploaded);
    let accepted: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "PATCH" && l.status == 202).collect();
    assert!(!accepted.is_empty() && accepted.iter().all(|l| l.body_len <= 150_000), "{accepted:?}");
    assert_stored(&registry, "app", &bytes);
}

/// Uploads `bytes` to `name` directly (no proxy) and returns its digest.
async fn seed(registry: &TestRegistry, name: &str, bytes: &Bytes) -> Digest {
    let (client, source) = (client(), BytesSource::new(bytes.clone()));
    let repo = repo(&client, &registry.host(), name);
    repo.upload_blob(&source, &UploadOptions::default()).await.unwrap().digest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_download_resumes_with_a_range_request() {
    let registry = TestRegistry::start();
    let bytes = blob(700_000);
    let digest = seed(&registry, "app", &bytes).await;
    let proxy =
        FaultProxy::start(registry.port(), vec![Rule::first(1, Fault::TruncateResponse(250_000)).method("GET")]);
    let mut out = Vec::new();
    let size = repo(&client(), &proxy.host(), "app").download_blob(&digest, u64::MAX, &mut out).await.unwrap();
    assert_eq!(size, 700_000);
    assert_eq!(out, bytes, "the resumed download is byte for byte the blob");
    let gets: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "GET").collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[1].range.as_deref().is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"), "{gets:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_follow_redirects_to_another_host() {
    let registry = TestRegistry::start();
    let bytes = blob(50_000);
    let digest = seed(&registry, "app", &bytes).await;
    let storage = FaultProxy::start(registry.port(), vec![]);
    let front = FaultProxy::start(
        registry.port(),
        vec![Rule::always(Fault::RedirectTo { base: format!("http://{}", storage.host()) }).method("GET")],
    );
    let mut out = Vec::new();
    repo(&client(), &front.host(), "app").download_blob(&digest, u64::MAX, &mut out).await.unwrap();
    assert_eq!(out, bytes);
    assert_eq!(front.log()[0].status, 307);
    assert_eq!(storage.count("GET", "/blobs/"), 1, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_that_hashes_wrong_is_refused() {
    let registry = TestRegistry::start();
    let bytes = blob(1000);
    seed(&registry, "app", &bytes).await;
    let other = seed(&registry, "app", &blob(999)).await;
    // Ask for one digest through a proxy that redirects to the other blob.
    let storage = FaultProxy::start(registry.port(), vec![]);
    let front = FaultProxy::start(
        registry.port(),
        vec![Rule::always(Fault::RedirectTo { base: format!("http://{}/v2/app/blobs/{other}#", storage.host()) })],
    );
    let wanted = Digest::of(&bytes);
    let mut out = Vec::new();
    let error = repo(&client(), &front.host(), "app").download_blob(&wanted, u64::MAX, &mut out).await.unwrap_err();
    assert!(error.to_string().contains("hash to"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_locations_are_resolved_and_the_newest_is_used() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::RelativeLocation)]);
    let client = client();
    let bytes = blob(256_000);
    let options = UploadOptions { chunk_size: Some(102_400), ..UploadOptions::default() };
    repo(&client, &proxy.host(), "app").upload_blob(&LateDigest::new(bytes.clone()), &options).await.unwrap();
    let log = proxy.log();
    assert!(log.iter().filter(|l| l.method == "POST").all(|l| l.fault.is_some()), "Locations were relative");
    // Each request goes to the Location of the answer before it: distribution
    // signs the offset into `_state`, so a stale one would fail.
    let states: Vec<&str> = log.iter().filter(|l| l.method != "HEAD").map(|l| l.query.as_str()).collect();
    assert_eq!(states.len(), 5, "POST, three PATCHes, PUT: {states:?}");
    assert!(states[1..].windows(2).all(|w| w[0] != w[1]), "every request used a fresh Location");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_grow_to_the_registrys_minimum() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(Fault::ChunkMinLength(200_000))]);
    let client = client();
    let bytes = blob(256_000);
    let options = UploadOptions { chunk_size: Some(102_400), ..UploadOptions::default() };
    repo(&client, &proxy.host(), "app").upload_blob(&LateDigest::new(bytes.clone()), &options).await.unwrap();
    let ranges: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "PATCH").map(|l| l.content_range).collect();
    assert_eq!(ranges, [Some("0-199999".to_owned()), Some("200000-255999".to_owned())]);
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_session_starts_a_new_upload() {
    let registry = TestRegistry::start();
    let lost = Fault::ErrorCode {
        status: 404,
        code: "BLOB_UPLOAD_UNKNOWN".into(),
        message: "blob upload unknown to registry".into(),
    };
    let proxy = FaultProxy::start(registry.port(), vec![Rule::first(1, lost).method("PATCH")]);
    let client = client();
    let bytes = blob(150_000);
    let open = OpenUploads::new();
    let options = UploadOptions { chunk_size: Some(102_400), track: Some(open.clone()), ..UploadOptions::default() };
    let outcome = repo(&client, &proxy.host(), "app").upload_blob(&LateDigest::new(bytes.clone()), &options).await;
    assert_eq!(outcome.unwrap().action, UploadAction::Uploaded);
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 2, "a new session after the lost one");
    assert_stored(&registry, "app", &bytes);
    // The one said to be lost is cancelled all the same, and not left recorded as open.
    assert_eq!(proxy.count("DELETE", "/blobs/uploads/"), 1);
    assert_eq!(open.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_one_put_upload_is_not_sent_again() {
    let registry = TestRegistry::start();
    // The registry stores the blob; its answer never comes back.
    let proxy = FaultProxy::start(registry.port(), vec![Rule::first(1, Fault::LoseAnswer).method("PUT")]);
    let client = client();
    let bytes = blob(5000);
    let outcome = repo(&client, &proxy.host(), "app")
        .upload_blob(&BytesSource::new(bytes.clone()), &UploadOptions::default())
        .await;
    assert_eq!(outcome.unwrap().action, UploadAction::Uploaded);
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 1, "a HEAD found it; the blob was not sent twice");
    assert_stored(&registry, "app", &bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn giving_up_cancels_the_session() {
    let registry = TestRegistry::start();
    let invalid = Fault::ErrorCode {
        status: 400,
        code: "DIGEST_INVALID".into(),
        message: "provided digest did not match".into(),
    };
    let proxy = FaultProxy::start(registry.port(), vec![Rule::always(invalid).method("PUT")]);
    let client = client();
    let error = repo(&client, &proxy.host(), "app")
        .upload_blob(&BytesSource::new(blob(5000)), &UploadOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("DIGEST_INVALID"), "{error}");
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 1, "a refused digest is not retried");
    let deletes: Vec<_> = proxy.log().into_iter().filter(|l| l.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "the session is cancelled");
    assert!(deletes[0].path.contains("/blobs/uploads/") && deletes[0].status == 204, "{deletes:?}");
}
