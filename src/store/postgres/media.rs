//! PostgreSQL queries for media metadata.

use async_trait::async_trait;

use super::{Conn, PostgresStore, execute, query_opt};
use crate::store::{
    MediaRecord, MediaReservation, MediaStore, NewMedia, StoreResult, ThumbnailKey,
    ThumbnailRecord,
    media::{MEDIA_COLUMNS, MediaRow, UrlPreviewRecord},
};

#[async_trait]
impl MediaStore for PostgresStore {
    async fn insert_media(&self, media: NewMedia) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_media(w.conn(), &media))).await
    }

    async fn reserve_media(
        &self,
        reservation: MediaReservation,
        max_pending: u64,
    ) -> StoreResult<bool> {
        self.write(move |w| w.block_on(reserve_media(w.conn(), &reservation, max_pending))).await
    }

    async fn fill_reserved_media(&self, media: NewMedia) -> StoreResult<bool> {
        self.write(move |w| w.block_on(fill_reserved_media(w.conn(), &media))).await
    }

    async fn media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>> {
        let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1");
        let Some(row) = query_opt(&*self.conn().await?, &sql, &[&media_id]).await? else {
            return Ok(None);
        };
        let row = MediaRow {
            media_id: row.try_get(0)?,
            uploader: row.try_get(1)?,
            created_ts: row.try_get(2)?,
            expires_ts: row.try_get(3)?,
            uploaded_ts: row.try_get(4)?,
            content_type: row.try_get(5)?,
            file_name: row.try_get(6)?,
            size: row.try_get(7)?,
            sha256: row.try_get(8)?,
        };
        row.into_record().map(Some)
    }

    async fn thumbnail(&self, key: &ThumbnailKey) -> StoreResult<Option<ThumbnailRecord>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT content_type, size, sha256 FROM media_thumbnails
             WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4",
            &[&key.media_id, &key.width, &key.height, &key.method],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ThumbnailRecord {
            key: key.clone(),
            content_type: row.try_get(0)?,
            size: row.try_get(1)?,
            sha256: row.try_get(2)?,
        }))
    }

    async fn insert_thumbnail(&self, thumbnail: ThumbnailRecord) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_thumbnail(w.conn(), &thumbnail))).await
    }

    async fn url_preview(&self, url: &str, since_ts: i64) -> StoreResult<Option<String>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT preview FROM url_previews WHERE url = $1 AND fetched_ts >= $2",
            &[&url, &since_ts],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(row.try_get(0)?))
    }

    async fn insert_url_preview(
        &self,
        preview: UrlPreviewRecord,
        expired_before: i64,
    ) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_url_preview(w.conn(), &preview, expired_before)))
            .await
    }
}

async fn insert_url_preview(
    c: &Conn,
    preview: &UrlPreviewRecord,
    expired_before: i64,
) -> StoreResult<()> {
    execute(c, "DELETE FROM url_previews WHERE fetched_ts < $1", &[&expired_before]).await?;
    execute(
        c,
        "INSERT INTO url_previews (url, fetched_ts, preview) VALUES ($1, $2, $3)
         ON CONFLICT (url) DO UPDATE SET fetched_ts = excluded.fetched_ts,
                                         preview = excluded.preview",
        &[&preview.url, &preview.fetched_ts, &preview.preview],
    )
    .await?;
    Ok(())
}

async fn insert_media(c: &Conn, media: &NewMedia) -> StoreResult<()> {
    let content = &media.content;
    execute(
        c,
        "INSERT INTO media (media_id, uploader, created_ts, uploaded_ts, content_type, file_name,
                            size, sha256)
         VALUES ($1, $2, $3, $3, $4, $5, $6, $7)",
        &[
            &media.media_id,
            &media.uploader.as_str(),
            &media.ts,
            &content.content_type,
            &content.file_name,
            &content.size,
            &content.sha256,
        ],
    )
    .await?;
    Ok(())
}

/// Removes expired reservations, then reserves the ID unless the uploader is at the cap.
async fn reserve_media(
    c: &Conn,
    reservation: &MediaReservation,
    max_pending: u64,
) -> StoreResult<bool> {
    let now = reservation.created_ts;
    let uploader = reservation.uploader.as_str();
    execute(c, "DELETE FROM media WHERE uploaded_ts IS NULL AND expires_ts <= $1", &[&now]).await?;
    let row = query_opt(
        c,
        "SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NULL",
        &[&uploader],
    )
    .await?;
    let pending: i64 = row.map(|row| row.try_get(0)).transpose()?.unwrap_or(0);
    if pending as u64 >= max_pending {
        return Ok(false);
    }
    execute(
        c,
        "INSERT INTO media (media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4)",
        &[&reservation.media_id, &uploader, &now, &reservation.expires_ts],
    )
    .await?;
    Ok(true)
}

async fn fill_reserved_media(c: &Conn, media: &NewMedia) -> StoreResult<bool> {
    let content = &media.content;
    let changed = execute(
        c,
        "UPDATE media SET uploaded_ts = $1, content_type = $2, file_name = $3, size = $4,
                          sha256 = $5
         WHERE media_id = $6 AND uploader = $7 AND uploaded_ts IS NULL AND expires_ts > $1",
        &[
            &media.ts,
            &content.content_type,
            &content.file_name,
            &content.size,
            &content.sha256,
            &media.media_id,
            &media.uploader.as_str(),
        ],
    )
    .await?;
    Ok(changed == 1)
}

async fn insert_thumbnail(c: &Conn, thumbnail: &ThumbnailRecord) -> StoreResult<()> {
    let key = &thumbnail.key;
    execute(
        c,
        "INSERT INTO media_thumbnails (media_id, width, height, method, content_type, size,
                                       sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (media_id, width, height, method) DO NOTHING",
        &[
            &key.media_id,
            &key.width,
            &key.height,
            &key.method,
            &thumbnail.content_type,
            &thumbnail.size,
            &thumbnail.sha256,
        ],
    )
    .await?;
    Ok(())
}
