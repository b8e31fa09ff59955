//! The bounds of `hoist_http::wire` on every exchange with a registry, with
//! registry errors.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
pub(crate) use hoist_http::wire::{Activity, error_body};
use url::Url;

use crate::RegistryError;

/// Sends `request`; fails once `activity` shows no progress for `limit`.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    activity: &Activity,
    limit: Duration,
    action: &str,
    url: &Url,
) -> Result<reqwest::Response, RegistryError> {
    hoist_http::wire::send(request, activity, limit).await.map_err(|e| e.into_error(action, url).into())
}

/// The next chunk of a body, which must arrive within `limit`.
pub(crate) async fn next_chunk<S>(
    body: &mut S,
    action: &str,
    url: &Url,
    limit: Duration,
) -> Result<Option<Bytes>, RegistryError>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    Ok(hoist_http::wire::next_chunk(body, action, url, limit).await?)
}

/// Reads a body of at most `max` bytes (see `hoist_http::wire::read_capped`).
pub(crate) async fn read_capped(
    action: &str,
    url: &Url,
    response: reqwest::Response,
    max: usize,
    limit: Duration,
) -> Result<Bytes, RegistryError> {
    Ok(hoist_http::wire::read_capped(action, url, response, max, limit).await?)
}
