//! What the server's outgoing HTTP clients share: push gateways, identity servers and
//! application services are told by someone else where to connect, so no answer of theirs is
//! read past a size limit.

/// The largest answer read from a push gateway, an identity server or an application service:
/// their answers are small JSON objects.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The body of `response` if it is at most `limit` bytes; `None` as soon as it is known to be
/// larger, without reading the rest.
pub async fn body_within(
    mut response: reqwest::Response,
    limit: usize,
) -> reqwest::Result<Option<Vec<u8>>> {
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|length| length > limit_u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
