//! The media repository: uploads (direct, and reserved with `POST /create` then uploaded), downloads
//! and thumbnails of local media, the files on disk (`files`) and the thumbnails (`thumbnail`).
//!
//! Bytes are written to a content-addressed file first and the metadata row after it, so a row
//! never names a missing file; the same bytes uploaded twice are one file. Thumbnails are made on
//! first request and kept (a row and a file), so the next request is a lookup. This module never
//! knows HTTP: it returns content and errors, and `crate::api` turns them into responses.
//!
//! Only local media is served. FIXME: remote media (`mxc://other.server/...`) needs federation's
//! media download, which does not exist yet; it is answered as unknown (404).

pub mod files;
pub mod preview;
pub mod thumbnail;

use std::{path::Path, sync::Arc, time::Duration};

use http::StatusCode;
use rand::{Rng as _, distributions::Alphanumeric};
use ruma::{OwnedMxcUri, OwnedServerName, ServerName, UserId, api::error::ErrorKind};
use tokio::sync::{Notify, Semaphore};

use self::{
    files::Files,
    thumbnail::{Method, ThumbnailError},
};
use crate::{
    Error, Result,
    config::MediaConfig,
    store::{
        MediaContent, MediaRecord, MediaReservation, NewMedia, Store, ThumbnailKey, ThumbnailRecord,
    },
    users::now_millis,
};

/// The longest a download waits for a reserved media ID's upload, whatever `timeout_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The largest thumbnail width or height a client may ask for.
pub const MAX_THUMBNAIL_SIDE: u32 = 4096;

/// Thumbnails made at once; each takes a core while it decodes and resizes.
const THUMBNAIL_WORKERS: usize = 2;

/// Content a client uploads.
#[derive(Clone, Debug)]
pub struct Upload {
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `filename` query parameter, if any.
    pub file_name: Option<String>,
    pub bytes: Vec<u8>,
}

/// Content to send back: the bytes and how the uploader described them.
#[derive(Clone, Debug)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub file_name: Option<String>,
}

/// What thumbnail a client asks for.
#[derive(Clone, Copy, Debug)]
pub struct ThumbnailRequest {
    pub width: u64,
    pub height: u64,
    pub method: Method,
}

/// The media repository of this server.
pub struct Media {
    store: Store,
    files: Files,
    config: MediaConfig,
    server_name: OwnedServerName,
    /// Woken after every upload to a reserved media ID, for the downloads waiting for one.
    uploaded: Notify,
    /// Bounds the thumbnails made at once.
    thumbnailing: Arc<Semaphore>,
    /// URL previews and their cache.
    previews: preview::Previews,
}

impl Media {
    /// The repository with its files under `<data_dir>/media`.
    pub fn new(
        store: Store,
        data_dir: &Path,
        config: MediaConfig,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            previews: preview::Previews::new(&config, store.clone()),
            store,
            files: Files::new(data_dir),
            config,
            server_name,
            uploaded: Notify::new(),
            thumbnailing: Arc::new(Semaphore::new(THUMBNAIL_WORKERS)),
        }
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    /// The preview of `url` (`GET /preview_url`); its image is stored as an upload of `user`.
    pub async fn preview_url(&self, user: &UserId, url: &str) -> Result<preview::Preview> {
        self.previews.preview(self, user, url).await
    }

    /// Stores a direct upload (`POST /upload`) under a new media ID.
    pub async fn upload(&self, uploader: &UserId, upload: Upload) -> Result<OwnedMxcUri> {
        let content = self.store_file(upload).await?;
        let media_id = new_media_id();
        let media = NewMedia { media_id, uploader: uploader.to_owned(), ts: now_millis(), content };
        let uri = self.mxc_uri(&media.media_id);
        self.store.insert_media(media).await?;
        Ok(uri)
    }

    /// Reserves a media ID for a later upload (`POST /create`); returns it and when it expires.
    pub async fn reserve(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
        let now = now_millis();
        let expiry = i64::try_from(self.config.pending_upload_expiry_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let reservation = MediaReservation {
            media_id: new_media_id(),
            uploader: uploader.to_owned(),
            created_ts: now,
            expires_ts: now.saturating_add(expiry),
        };
        let (uri, expires_ts) = (self.mxc_uri(&reservation.media_id), reservation.expires_ts);
        if !self.store.reserve_media(reservation, self.config.max_pending_uploads).await? {
            return Err(too_many_pending());
        }
        Ok((uri, expires_ts))
    }

    /// Uploads the content of a media ID the uploader reserved (`PUT /upload/{server}/{id}`):
    /// only its creator may, only once, and only before it expires.
    pub async fn upload_reserved(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        upload: Upload,
    ) -> Result<()> {
        let record = self.local_record(server_name, media_id).await?;
        if record.uploader != uploader {
            return Err(Error::forbidden("This media ID was created by another user"));
        }
        if record.content.is_some() {
            return Err(cannot_overwrite());
        }
        let content = self.store_file(upload).await?;
        let media = NewMedia {
            media_id: media_id.to_owned(),
            uploader: uploader.to_owned(),
            ts: now_millis(),
            content,
        };
        // Another upload to the same ID may have won the race, or the reservation just expired.
        if !self.store.fill_reserved_media(media).await? {
            return Err(cannot_overwrite());
        }
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// The content of a local media ID, waiting up to `timeout` for a reserved one's upload.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<Content> {
        let content = self.uploaded_content(server_name, media_id, timeout).await?;
        let bytes = self.read_file(content.sha256.clone()).await?;
        Ok(Content { bytes, content_type: content.content_type, file_name: content.file_name })
    }

    /// A thumbnail of a local image, made on first request and kept.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        timeout: Duration,
    ) -> Result<Content> {
        let (width, height) = thumbnail_size(request)?;
        let content = self.uploaded_content(server_name, media_id, timeout).await?;
        if !thumbnail::is_supported(&content.content_type) {
            return Err(cannot_thumbnail());
        }
        let key = ThumbnailKey {
            media_id: media_id.to_owned(),
            width: width.into(),
            height: height.into(),
            method: request.method.as_str().to_owned(),
        };
        let record = match self.store.thumbnail(&key).await? {
            Some(record) => record,
            None => self.make_thumbnail(&content, key).await?,
        };
        let bytes = self.read_file(record.sha256).await?;
        let file_name = Some(format!("thumbnail.{}", extension(&record.content_type)));
        Ok(Content { bytes, content_type: record.content_type, file_name })
    }

    /// Makes a thumbnail, stores its file, then its row.
    async fn make_thumbnail(
        &self,
        content: &MediaContent,
        key: ThumbnailKey,
    ) -> Result<ThumbnailRecord> {
        let _permit = self.thumbnailing.acquire().await.map_err(anyhow::Error::from)?;
        let source = self.read_file(content.sha256.clone()).await?;
        let (files, max_pixels) = (self.files.clone(), self.config.max_thumbnail_source_pixels);
        let (width, height, method) = (key.width as u32, key.height as u32, thumbnail_method(&key));
        let made = tokio::task::spawn_blocking(move || {
            let thumbnail = thumbnail::make(&source, width, height, method, max_pixels)?;
            let sha256 = files.write(&thumbnail.bytes).map_err(Error::Internal)?;
            Ok::<_, Error>((thumbnail, sha256))
        })
        .await
        .map_err(anyhow::Error::from)?;
        let (thumbnail, sha256) = made?;
        let record = ThumbnailRecord {
            key,
            content_type: thumbnail.content_type.to_owned(),
            size: thumbnail.bytes.len() as i64,
            sha256,
        };
        self.store.insert_thumbnail(record.clone()).await?;
        Ok(record)
    }

    /// The content of a local media ID once uploaded, waiting up to `timeout` (at most
    /// [`MAX_WAIT`]) for a reserved ID's upload; then `M_NOT_YET_UPLOADED`.
    async fn uploaded_content(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<MediaContent> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            // Created before the look-up, so an upload between the two still wakes it.
            let uploaded = self.uploaded.notified();
            let record = self.local_record(server_name, media_id).await?;
            if let Some(uploaded) = record.content {
                return Ok(uploaded.content);
            }
            if tokio::time::timeout_at(deadline, uploaded).await.is_err() {
                return Err(not_yet_uploaded());
            }
        }
    }

    /// The row of a local media ID that exists: uploaded, or reserved and not expired.
    async fn local_record(&self, server_name: &ServerName, media_id: &str) -> Result<MediaRecord> {
        check_media_id(media_id)?;
        if server_name != self.server_name {
            // FIXME: fetch remote media over federation once it exists.
            return Err(Error::not_found("Remote media is not available on this server yet"));
        }
        let record = self.store.media(media_id).await?;
        let expired = |record: &MediaRecord| {
            record.content.is_none() && record.expires_ts.is_some_and(|at| at <= now_millis())
        };
        match record {
            Some(record) if !expired(&record) => Ok(record),
            _ => Err(Error::not_found("No media with this ID")),
        }
    }

    /// Checks an upload and writes its file; returns what its row records.
    async fn store_file(&self, upload: Upload) -> Result<MediaContent> {
        let max = self.config.max_upload_bytes;
        if upload.bytes.len() as u64 > max {
            return Err(Error::too_large(format!("The file exceeds {max} bytes")));
        }
        let content_type = checked_content_type(upload.content_type)?;
        let file_name = checked_file_name(upload.file_name)?;
        let size = upload.bytes.len() as i64;
        let files = self.files.clone();
        let sha256 = tokio::task::spawn_blocking(move || files.write(&upload.bytes))
            .await
            .map_err(anyhow::Error::from)??;
        Ok(MediaContent { content_type, file_name, size, sha256 })
    }

    async fn read_file(&self, sha256: String) -> Result<Vec<u8>> {
        let files = self.files.clone();
        let bytes = tokio::task::spawn_blocking(move || files.read(&sha256))
            .await
            .map_err(anyhow::Error::from)??;
        Ok(bytes)
    }

    fn mxc_uri(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }
}

/// Whether a browser may show content of this type in the page (`Content-Disposition: inline`):
/// images other than SVG, video, audio and plain text. Anything else (HTML, SVG, scripts, PDF)
/// is served as an attachment, under a sandboxing `Content-Security-Policy` as well.
pub fn is_safe_inline(content_type: &str) -> bool {
    let essence = essence(content_type);
    (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence.starts_with("video/")
        || essence.starts_with("audio/")
        || essence == "text/plain"
}

/// The `type/subtype` of a content type, lowercase, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// A new random media ID: 24 letters and digits.
fn new_media_id() -> String {
    rand::thread_rng().sample_iter(Alphanumeric).take(24).map(char::from).collect()
}

/// Media IDs are opaque, but the spec limits them to letters, digits, `_` and `-`.
fn check_media_id(media_id: &str) -> Result<()> {
    let valid = !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid { Ok(()) } else { Err(Error::invalid_param("Invalid media ID")) }
}

/// The stored content type: the client's, if it looks like `type/subtype`, or
/// `application/octet-stream` when none was given.
fn checked_content_type(content_type: Option<String>) -> Result<String> {
    let Some(content_type) = content_type else {
        return Ok("application/octet-stream".to_owned());
    };
    let essence = essence(&content_type);
    let valid = content_type.len() <= 255
        && content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence.split_once('/').is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty());
    if valid { Ok(content_type) } else { Err(Error::invalid_param("Invalid Content-Type")) }
}

/// The file name as given, if it is one: at most 255 bytes, no control characters.
fn checked_file_name(file_name: Option<String>) -> Result<Option<String>> {
    match file_name {
        Some(name) if name.len() > 255 || name.chars().any(char::is_control) => {
            Err(Error::invalid_param("Invalid file name"))
        }
        other => Ok(other),
    }
}

/// The requested thumbnail size, if it is one Hearth makes.
fn thumbnail_size(request: ThumbnailRequest) -> Result<(u32, u32)> {
    let side = |length: u64| {
        u32::try_from(length).ok().filter(|length| (1..=MAX_THUMBNAIL_SIDE).contains(length))
    };
    match (side(request.width), side(request.height)) {
        (Some(width), Some(height)) => Ok((width, height)),
        _ => Err(Error::invalid_param(format!(
            "Thumbnail width and height must be between 1 and {MAX_THUMBNAIL_SIDE}"
        ))),
    }
}

fn thumbnail_method(key: &ThumbnailKey) -> Method {
    if key.method == Method::Crop.as_str() { Method::Crop } else { Method::Scale }
}

fn extension(content_type: &str) -> &'static str {
    if content_type == "image/jpeg" { "jpg" } else { "png" }
}

impl From<ThumbnailError> for Error {
    fn from(error: ThumbnailError) -> Self {
        match error {
            ThumbnailError::Unsupported(_) => cannot_thumbnail(),
            ThumbnailError::TooLarge => Error::too_large("The image is too large to thumbnail"),
        }
    }
}

/// 400 `M_UNKNOWN`, as the spec's example for content that cannot be thumbnailed.
fn cannot_thumbnail() -> Error {
    Error::bad_request("Cannot generate thumbnails for the requested content")
}

/// 409 `M_CANNOT_OVERWRITE_MEDIA`.
fn cannot_overwrite() -> Error {
    Error::client(
        StatusCode::CONFLICT,
        ErrorKind::CannotOverwriteMedia,
        "This media ID already has content",
    )
}

/// 504 `M_NOT_YET_UPLOADED`.
fn not_yet_uploaded() -> Error {
    Error::client(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NotYetUploaded,
        "The content of this media ID has not been uploaded yet",
    )
}

/// 429 `M_LIMIT_EXCEEDED` for a user who holds too many reserved media IDs. There is no time
/// after which a retry surely succeeds: it does once one of them is uploaded or expires.
fn too_many_pending() -> Error {
    Error::client(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::LimitExceeded(ruma::api::error::LimitExceededErrorData::new()),
        "Too many media IDs are waiting for their upload",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passive_types_are_shown_inline() {
        for inline in ["image/png", "IMAGE/JPEG", "video/mp4", "audio/ogg", "text/plain; charset=x"]
        {
            assert!(is_safe_inline(inline), "{inline}");
        }
        for attachment in
            ["image/svg+xml", "text/html", "application/xhtml+xml", "application/pdf", "text/xml"]
        {
            assert!(!is_safe_inline(attachment), "{attachment}");
        }
    }

    #[test]
    fn media_ids_follow_the_spec_grammar() {
        assert!(check_media_id(&new_media_id()).is_ok());
        for bad in ["", "a.b", "a b", "ä", &"a".repeat(256)] {
            assert!(check_media_id(bad).is_err(), "{bad}");
        }
    }
}
