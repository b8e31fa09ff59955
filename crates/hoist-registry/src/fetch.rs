//! Reading blobs back from a repository (manifests: `manifest.rs`).
//!
//! Blob GETs follow redirects (registries send them to CDNs and object
//! stores) with reqwest's default policy, which drops `Authorization`,
//! `Cookie` and `Proxy-Authorization` when a redirect changes host or port:
//! credentials never reach another host. [`Repository::download_blob`]
//! resumes a broken download with `Range: bytes=<n>-` and verifies the digest
//! of the whole; [`Repository::download_blob_to`] does the same into any
//! [`BlobSink`] (a file by position, a bounded channel), telling a local
//! write failure and wrong bytes apart from the registry's errors.

use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use hoist_oci::{Digest, Sha256};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use std::future::Future;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::repository::{error_from, header_str};
use crate::retry::Budget;
use crate::wire::{self, next_chunk};
use crate::{ErrorKind, RegistryError, Repository};

impl Repository {
    /// GETs a small blob (a config) whole, verifying its digest; refuses blobs over `max` bytes.
    pub async fn get_small_blob(&self, digest: &Digest, max: usize) -> Result<Bytes, RegistryError> {
        let action = format!("read blob {digest} from {}", self.name());
        let url = self.endpoint(&format!("blobs/{digest}"));
        let response = self.send(&action, &url, self.http().get(url.clone())).await?;
        if response.status() != StatusCode::OK {
            return Err(error_from(&action, &url, response).await);
        }
        let bytes = wire::read_capped(&action, &url, response, max, self.stall_limit()).await?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::new(ErrorKind::Mismatch, action)
                .with_url(&url)
                .with_detail("the body does not hash to the digest asked for"));
        }
        Ok(bytes)
    }
}

impl Repository {
    /// Streams blob `digest` into `out`, resuming with `Range` requests when
    /// the connection breaks or stalls, and checks the digest of everything
    /// written; more than `max` bytes are refused. Returns the blob's size.
    pub async fn download_blob(
        &self,
        digest: &Digest,
        max: u64,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<u64, RegistryError> {
        let mut sink = WriteSink(out);
        let action = || format!("download blob {digest} from {}", self.name());
        self.download_blob_to(digest, Some(max), &mut sink).await.map_err(|error| match error {
            DownloadError::Registry(error) => error,
            DownloadError::Sink { source, .. } => {
                RegistryError::new(ErrorKind::Local, action()).with_detail(format!("cannot write the blob: {source}"))
            }
            other => RegistryError::new(ErrorKind::Mismatch, action()).with_detail(other.to_string()),
        })
    }

    /// Streams blob `digest` into `sink` in order, resuming with `Range`
    /// requests when the connection breaks (a registry that ignores `Range`
    /// sends it all again; what `sink` has is skipped), or stalls (no chunk
    /// within the stall limit), and checks the digest of the whole. With `size`, more bytes than that are refused as they
    /// come. Returns the blob's size. The error tells a registry's failure
    /// from the sink's (a local disk or pipe) and from wrong bytes.
    pub async fn download_blob_to<S: BlobSink>(
        &self,
        digest: &Digest,
        size: Option<u64>,
        sink: &mut S,
    ) -> Result<u64, DownloadError> {
        self.download_from(digest, size, Sha256::new(), sink, |_| {}).await
    }

    /// [`Self::download_blob_to`] from where `hashed` stands: its length is
    /// the offset to start at, and the digest checked at the end is of
    /// everything it hashed before plus what arrives now. `on_hashed` sees
    /// the hash after every piece (to keep states a later call can start
    /// from). Returns the blob's size.
    pub(crate) async fn download_from<S: BlobSink>(
        &self,
        digest: &Digest,
        size: Option<u64>,
        mut hasher: Sha256,
        sink: &mut S,
        mut on_hashed: impl FnMut(&Sha256) + Send,
    ) -> Result<u64, DownloadError> {
        let action = format!("download blob {digest} from {}", self.name());
        let url = self.endpoint(&format!("blobs/{digest}"));
        let retries = AtomicU32::new(0);
        let context = self.retry_context(Some(&retries));
        let mut budget = Budget::new(&context.policy);
        let mut written = hasher.len();
        let mut resumed_from = written;
        let mut attempt = 1;
        loop {
            let mut request = self.http().get(url.clone());
            if written > 0 {
                request = request.header(RANGE, format!("bytes={written}-"));
            }
            let response = self.send_counted(&action, &url, request, Some(&retries)).await?;
            // A registry may ignore Range and send everything again: skip what we have.
            let mut skip = match response.status() {
                StatusCode::OK => written,
                StatusCode::PARTIAL_CONTENT => {
                    let range = header_str(&response, CONTENT_RANGE.as_str()).unwrap_or_default();
                    if !range.starts_with(&format!("bytes {written}-")) {
                        return Err(RegistryError::new(ErrorKind::Protocol, action)
                            .with_url(&url)
                            .with_detail(format!("asked for bytes from {written}, got Content-Range `{range}`"))
                            .into());
                    }
                    0
                }
                _ => return Err(error_from(&action, &url, response).await.into()),
            };
            let mut body = response.bytes_stream();
            let broken = loop {
                match next_chunk(&mut body, &action, &url, self.stall_limit()).await {
                    Ok(Some(mut chunk)) => {
                        let from = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                        skip -= from as u64;
                        let fresh = chunk.split_off(from);
                        if fresh.is_empty() {
                            continue;
                        }
                        if let Some(size) = size
                            && written + fresh.len() as u64 > size
                        {
                            return Err(DownloadError::TooLong { digest: digest.clone(), size });
                        }
                        hasher.update(&fresh);
                        on_hashed(&hasher);
                        written += fresh.len() as u64;
                        sink.accept(fresh)
                            .await
                            .map_err(|source| DownloadError::Sink { digest: digest.clone(), source })?;
                    }
                    Err(error) => break error,
                    Ok(None) => {
                        sink.finish().await.map_err(|source| DownloadError::Sink { digest: digest.clone(), source })?;
                        let actual = hasher.finish();
                        if actual != *digest {
                            return Err(DownloadError::Digest {
                                digest: digest.clone(),
                                repository: self.name().to_owned(),
                                actual,
                            });
                        }
                        return Ok(written);
                    }
                }
            };
            if !broken.is_retryable() {
                return Err(broken.into());
            }
            // Progress since the last break gives the retries a fresh start:
            // a long download is bounded per break, not in all.
            if written > resumed_from {
                resumed_from = written;
                budget = Budget::new(&context.policy);
            }
            let Ok(delay) = budget.next(None) else { return Err(broken.into()) };
            let reason = format!("{}; resuming at byte {written}", broken.details().detail.clone().unwrap_or_default());
            context.pause(&action, attempt, delay, reason).await;
            attempt += 1;
        }
    }
}

/// Takes a downloaded blob's bytes, in order, as they arrive.
pub trait BlobSink: Send {
    fn accept(&mut self, bytes: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;

    /// The body ended: flush what is held, before the digest is checked.
    fn finish(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// An [`AsyncWrite`] as a sink.
struct WriteSink<'a>(&'a mut (dyn AsyncWrite + Send + Unpin));

impl BlobSink for WriteSink<'_> {
    async fn accept(&mut self, bytes: Bytes) -> std::io::Result<()> {
        self.0.write_all(&bytes).await
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush().await
    }
}

/// Why [`Repository::download_blob_to`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The sink refused the bytes: a local failure (a full disk, a closed pipe).
    #[error("cannot write blob {digest}: {source}")]
    Sink { digest: Digest, source: std::io::Error },
    /// The bytes received do not hash to the digest asked for.
    #[error("blob {digest} from {repository} is corrupt: the bytes received hash to {actual}")]
    Digest { digest: Digest, repository: String, actual: Digest },
    /// The registry sent more bytes than the blob's descriptor says it has.
    #[error("blob {digest} is larger than the {size} bytes its descriptor says")]
    TooLong { digest: Digest, size: u64 },
}

#[cfg(test)]
mod tests {
    use hoist_testkit::{Fault, FaultProxy, Rule, TestRegistry};
    use reqwest::header::AUTHORIZATION;

    use crate::{Client, ClientOptions};

    /// reqwest's redirect policy, as our client is built, keeps credentials
    /// on the registry's host and drops them on a redirect to another one.
    #[tokio::test(flavor = "multi_thread")]
    async fn redirects_to_another_host_carry_no_authorization() {
        let registry = TestRegistry::start();
        let storage = FaultProxy::start(registry.port(), vec![]);
        let front = FaultProxy::start(
            registry.port(),
            vec![Rule::always(Fault::RedirectTo { base: format!("http://{}", storage.host()) })],
        );
        let client = Client::new(ClientOptions::default()).unwrap();
        let reference = hoist_oci::Reference::parse(&format!("{}/app:1", front.host())).unwrap();
        let repo = client.repository(&reference);
        let url = repo.endpoint("tags/list");
        let request = repo.http().get(url.clone()).header(AUTHORIZATION, "Bearer not-for-other-hosts");
        let response = repo.send("list tags", &url, request).await.unwrap();
        assert_eq!(response.url().port(), Some(storage.port()), "the redirect was followed");
        assert!(front.log()[0].authorization, "the registry's host gets the credentials");
        assert_eq!(storage.log().len(), 1);
        assert!(!storage.log()[0].authorization, "another host never does");
    }
}
