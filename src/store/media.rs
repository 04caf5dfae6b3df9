//! The media repository's metadata: which media IDs exist, who uploaded them, what their content
//! is (type, file name, size, SHA-256 of the bytes), which thumbnails were generated, and the URL
//! previews cached.
//!
//! Only rows live here; the bytes are files in the data directory that `crate::media` writes
//! before it records them, so no row ever names a file that is not on disk.

use async_trait::async_trait;
use ruma::OwnedUserId;

use super::StoreResult;

/// Media metadata, for `crate::media`.
#[async_trait]
pub trait MediaStore {
    /// Records a direct upload (`POST /upload`) under a new media ID.
    async fn insert_media(&self, media: NewMedia) -> StoreResult<()>;

    /// Reserves a media ID for content uploaded later (`POST /create`). Reservations that expired
    /// unused (of every user) are removed first; then, if the uploader still holds `max_pending`
    /// unexpired ones, nothing is reserved and the answer is `false`.
    async fn reserve_media(
        &self,
        reservation: MediaReservation,
        max_pending: u64,
    ) -> StoreResult<bool>;

    /// Gives a reserved media ID its content, if it is the uploader's, has none yet and has not
    /// expired at `media.ts`. Returns `false` (and changes nothing) otherwise.
    async fn fill_reserved_media(&self, media: NewMedia) -> StoreResult<bool>;

    /// A local media ID's row, reserved or uploaded.
    async fn media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>>;

    /// A generated thumbnail of a media ID with exactly these dimensions and method.
    async fn thumbnail(&self, key: &ThumbnailKey) -> StoreResult<Option<ThumbnailRecord>>;

    /// Records a generated thumbnail; one already recorded for the same key is kept (two requests
    /// that generated it at once stored the same bytes).
    async fn insert_thumbnail(&self, thumbnail: ThumbnailRecord) -> StoreResult<()>;

    /// The cached preview (its JSON) of `url` if it was fetched at or after `since_ts`.
    async fn url_preview(&self, url: &str, since_ts: i64) -> StoreResult<Option<String>>;

    /// Caches a URL preview, replacing an earlier one of the same URL, and removes the previews
    /// fetched before `expired_before`.
    async fn insert_url_preview(
        &self,
        preview: UrlPreviewRecord,
        expired_before: i64,
    ) -> StoreResult<()>;
}

/// A URL preview as it is cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPreviewRecord {
    /// The URL without its fragment.
    pub url: String,
    /// When the page was fetched (ms since the epoch).
    pub fetched_ts: i64,
    /// The preview's JSON object.
    pub preview: String,
}

/// Content to record for a media ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMedia {
    pub media_id: String,
    pub uploader: OwnedUserId,
    /// When it was uploaded (ms since the epoch).
    pub ts: i64,
    pub content: MediaContent,
}

/// What was uploaded: its type and name as the client gave them, and the bytes' size and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaContent {
    pub content_type: String,
    pub file_name: Option<String>,
    pub size: i64,
    /// Lowercase hex; names the file in the data directory.
    pub sha256: String,
}

/// A media ID reserved for a later upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaReservation {
    pub media_id: String,
    pub uploader: OwnedUserId,
    pub created_ts: i64,
    /// After this (ms since the epoch) the ID can no longer be uploaded to.
    pub expires_ts: i64,
}

/// A stored media ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRecord {
    pub media_id: String,
    pub uploader: OwnedUserId,
    pub created_ts: i64,
    /// Set for a reservation (`POST /create`), uploaded or not.
    pub expires_ts: Option<i64>,
    /// `None` until the content is uploaded.
    pub content: Option<UploadedContent>,
}

/// The content of a stored media ID and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedContent {
    pub uploaded_ts: i64,
    pub content: MediaContent,
}

/// Which thumbnail of a media ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailKey {
    pub media_id: String,
    pub width: i64,
    pub height: i64,
    /// `crop` or `scale`.
    pub method: String,
}

/// A generated thumbnail: its bytes are a content-addressed file like any media's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub key: ThumbnailKey,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// The row columns of [`MediaRecord`] as both backends read them, in `SELECT` order:
/// media_id, uploader, created_ts, expires_ts, uploaded_ts, content_type, file_name, size, sha256.
pub(crate) const MEDIA_COLUMNS: &str = "media_id, uploader, created_ts, expires_ts, uploaded_ts, content_type, file_name, size, sha256";

/// The columns of a media row, read by either backend.
pub(crate) struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub uploaded_ts: Option<i64>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
}

impl MediaRow {
    /// The record; a row counts as uploaded only when all its content columns are set.
    pub(crate) fn into_record(self) -> StoreResult<MediaRecord> {
        let content = match (self.uploaded_ts, self.content_type, self.size, self.sha256) {
            (Some(uploaded_ts), Some(content_type), Some(size), Some(sha256)) => {
                Some(UploadedContent {
                    uploaded_ts,
                    content: MediaContent { content_type, file_name: self.file_name, size, sha256 },
                })
            }
            _ => None,
        };
        Ok(MediaRecord {
            media_id: self.media_id,
            uploader: self.uploader.try_into()?,
            created_ts: self.created_ts,
            expires_ts: self.expires_ts,
            content,
        })
    }
}
