//! SQLite queries for media metadata.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::SqliteStore;
use crate::store::{
    MediaRecord, MediaReservation, MediaStore, NewMedia, StoreResult, ThumbnailKey,
    ThumbnailRecord,
    media::{MEDIA_COLUMNS, MediaRow, UrlPreviewRecord},
};

#[async_trait]
impl MediaStore for SqliteStore {
    async fn insert_media(&self, media: NewMedia) -> StoreResult<()> {
        self.write(move |c| {
            let content = &media.content;
            c.execute(
                "INSERT INTO media (media_id, uploader, created_ts, uploaded_ts, content_type,
                                    file_name, size, sha256)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)",
                params![
                    media.media_id,
                    media.uploader.as_str(),
                    media.ts,
                    content.content_type,
                    content.file_name,
                    content.size,
                    content.sha256
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn reserve_media(
        &self,
        reservation: MediaReservation,
        max_pending: u64,
    ) -> StoreResult<bool> {
        self.write(move |c| {
            let now = reservation.created_ts;
            c.execute(
                "DELETE FROM media WHERE uploaded_ts IS NULL AND expires_ts <= ?1",
                params![now],
            )?;
            if pending_count(c, reservation.uploader.as_str())? >= max_pending {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO media (media_id, uploader, created_ts, expires_ts)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    reservation.media_id,
                    reservation.uploader.as_str(),
                    now,
                    reservation.expires_ts
                ],
            )?;
            Ok(true)
        })
        .await
    }

    async fn fill_reserved_media(&self, media: NewMedia) -> StoreResult<bool> {
        self.write(move |c| {
            let content = &media.content;
            let changed = c.execute(
                "UPDATE media SET uploaded_ts = ?1, content_type = ?2, file_name = ?3, size = ?4,
                                  sha256 = ?5
                 WHERE media_id = ?6 AND uploader = ?7 AND uploaded_ts IS NULL
                   AND expires_ts > ?1",
                params![
                    media.ts,
                    content.content_type,
                    content.file_name,
                    content.size,
                    content.sha256,
                    media.media_id,
                    media.uploader.as_str()
                ],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>> {
        let media_id = media_id.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = ?1");
            let row = c
                .query_row(&sql, params![media_id], |row| {
                    Ok(MediaRow {
                        media_id: row.get(0)?,
                        uploader: row.get(1)?,
                        created_ts: row.get(2)?,
                        expires_ts: row.get(3)?,
                        uploaded_ts: row.get(4)?,
                        content_type: row.get(5)?,
                        file_name: row.get(6)?,
                        size: row.get(7)?,
                        sha256: row.get(8)?,
                    })
                })
                .optional()?;
            row.map(MediaRow::into_record).transpose()
        })
        .await
    }

    async fn thumbnail(&self, key: &ThumbnailKey) -> StoreResult<Option<ThumbnailRecord>> {
        let key = key.clone();
        self.read(move |c| {
            let found = c
                .query_row(
                    "SELECT content_type, size, sha256 FROM media_thumbnails
                     WHERE media_id = ?1 AND width = ?2 AND height = ?3 AND method = ?4",
                    params![key.media_id, key.width, key.height, key.method],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            Ok(found.map(|(content_type, size, sha256)| ThumbnailRecord {
                key,
                content_type,
                size,
                sha256,
            }))
        })
        .await
    }

    async fn insert_thumbnail(&self, thumbnail: ThumbnailRecord) -> StoreResult<()> {
        self.write(move |c| {
            let key = &thumbnail.key;
            c.execute(
                "INSERT INTO media_thumbnails (media_id, width, height, method, content_type,
                                               size, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (media_id, width, height, method) DO NOTHING",
                params![
                    key.media_id,
                    key.width,
                    key.height,
                    key.method,
                    thumbnail.content_type,
                    thumbnail.size,
                    thumbnail.sha256
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn url_preview(&self, url: &str, since_ts: i64) -> StoreResult<Option<String>> {
        let url = url.to_owned();
        self.read(move |c| {
            let found = c
                .query_row(
                    "SELECT preview FROM url_previews WHERE url = ?1 AND fetched_ts >= ?2",
                    params![url, since_ts],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(found)
        })
        .await
    }

    async fn insert_url_preview(
        &self,
        preview: UrlPreviewRecord,
        expired_before: i64,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute("DELETE FROM url_previews WHERE fetched_ts < ?1", params![expired_before])?;
            c.execute(
                "INSERT INTO url_previews (url, fetched_ts, preview) VALUES (?1, ?2, ?3)
                 ON CONFLICT (url) DO UPDATE SET fetched_ts = excluded.fetched_ts,
                                                 preview = excluded.preview",
                params![preview.url, preview.fetched_ts, preview.preview],
            )?;
            Ok(())
        })
        .await
    }
}

/// How many reservations of the uploader are still waiting for their content.
fn pending_count(c: &Connection, uploader: &str) -> StoreResult<u64> {
    let count: i64 = c.query_row(
        "SELECT COUNT(*) FROM media WHERE uploader = ?1 AND uploaded_ts IS NULL",
        params![uploader],
        |row| row.get(0),
    )?;
    Ok(count as u64)
}
