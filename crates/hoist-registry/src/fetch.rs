//! Reading blobs back from a repository (manifests: `manifest.rs`).
//!
//! Blob GETs follow redirects (registries send them to CDNs and object
//! stores) with reqwest's default policy, which drops `Authorization`,
//! `Cookie` and `Proxy-Authorization` when a redirect changes host or port:
//! credentials never reach another host. [`Repository::download_blob`]
//! resumes a broken download with `Range: bytes=<n>-` and verifies the digest
//! of the whole.

use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use hoist_oci::{Digest, Sha256};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
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
    /// written. At most `max` bytes are read. Returns the blob's size.
    pub async fn download_blob(
        &self,
        digest: &Digest,
        max: u64,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<u64, RegistryError> {
        let action = format!("download blob {digest} from {}", self.name());
        let url = self.endpoint(&format!("blobs/{digest}"));
        let retries = AtomicU32::new(0);
        let context = self.retry_context(Some(&retries));
        let mut budget = Budget::new(&context.policy);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut attempt = 1;
        let local = |e: std::io::Error| {
            RegistryError::new(ErrorKind::Local, action.clone()).with_detail(format!("cannot write the blob: {e}"))
        };
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
                            .with_detail(format!("asked for bytes from {written}, got Content-Range `{range}`")));
                    }
                    0
                }
                _ => return Err(error_from(&action, &url, response).await),
            };
            let mut body = response.bytes_stream();
            let broken = loop {
                match next_chunk(&mut body, &action, &url, self.stall_limit()).await {
                    Ok(Some(chunk)) => {
                        let from = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                        skip -= from as u64;
                        let fresh = &chunk[from..];
                        if written + fresh.len() as u64 > max {
                            return Err(RegistryError::new(ErrorKind::Mismatch, action)
                                .with_url(&url)
                                .with_detail(format!("the blob is larger than the {max} bytes it should be")));
                        }
                        hasher.update(fresh);
                        out.write_all(fresh).await.map_err(local)?;
                        written += fresh.len() as u64;
                    }
                    Ok(None) => {
                        out.flush().await.map_err(local)?;
                        let actual = hasher.finish();
                        if actual != *digest {
                            return Err(RegistryError::new(ErrorKind::Mismatch, action)
                                .with_url(&url)
                                .with_detail(format!("the bytes received hash to {actual}")));
                        }
                        return Ok(written);
                    }
                    Err(error) => break error,
                }
            };
            if !broken.is_retryable() {
                return Err(broken);
            }
            let Ok(delay) = budget.next(None) else { return Err(broken) };
            let reason = format!("{}; resuming at byte {written}", broken.details().detail.clone().unwrap_or_default());
            context.pause(&action, attempt, delay, reason).await;
            attempt += 1;
        }
    }
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
