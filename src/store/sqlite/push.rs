//! SQLite queries for push notifications and pushers.

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};
use rusqlite::{Connection, Row, params};

use super::{SqliteStore, next_stream_position};
use crate::store::{
    NewNotification, NotificationCount, NotificationRecord, NotificationsQuery, PushStore,
    PusherCleanup, PusherRecord, StoreResult, push_sql,
};

#[async_trait]
impl PushStore for SqliteStore {
    async fn add_notifications(&self, notifications: Vec<NewNotification>) -> StoreResult<i64> {
        self.write(move |c| {
            let position = next_stream_position(c)?;
            let mut statement =
                c.prepare_cached(&push_sql::INSERT_NOTIFICATION.replace('$', "?"))?;
            for n in &notifications {
                statement.execute(params![
                    n.user_id.as_str(),
                    n.stream_position,
                    n.room_id.as_str(),
                    n.event_id.as_str(),
                    n.thread_id,
                    i64::from(n.highlight),
                    n.actions,
                    n.ts,
                    position
                ])?;
            }
            Ok(position)
        })
        .await
    }

    async fn notification_counts(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<NotificationCount>> {
        let (user_id, room_ids) = (user_id.to_owned(), room_ids.to_vec());
        self.read(move |c| {
            let mut statement = c.prepare_cached(&push_sql::COUNTS.replace('$', "?"))?;
            let mut counts = Vec::new();
            for room_id in room_ids {
                let rows = statement
                    .query_map(params![user_id.as_str(), room_id.as_str()], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    })?;
                for row in rows {
                    let (thread_id, notifications, highlights) = row?;
                    counts.push(NotificationCount {
                        room_id: room_id.clone(),
                        thread_id,
                        notifications: notifications.try_into()?,
                        highlights: highlights.try_into()?,
                    });
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn rooms_with_new_notifications(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let (user_id, room_ids) = (user_id.to_owned(), room_ids.to_vec());
        self.read(move |c| {
            let mut statement =
                c.prepare_cached(&push_sql::NEW_NOTIFICATION_ROOMS.replace('$', "?"))?;
            let rows = statement
                .query_map(params![user_id.as_str(), after, upto], |r| r.get::<_, String>(0))?;
            let found = rows.collect::<Result<Vec<String>, _>>()?;
            Ok(room_ids.into_iter().filter(|id| found.iter().any(|f| f == id.as_str())).collect())
        })
        .await
    }

    async fn notifications(
        &self,
        query: NotificationsQuery,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.read(move |c| {
            let mut statement = c.prepare_cached(&push_sql::NOTIFICATIONS.replace('$', "?"))?;
            let before = query.before.unwrap_or(i64::MAX);
            let only = i64::from(query.only_highlight);
            let limit = i64::try_from(query.limit)?;
            let rows = statement.query_map(
                params![query.user_id.as_str(), before, only, limit],
                notification_row,
            )?;
            rows.map(|row| row?.into_record()).collect()
        })
        .await
    }

    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()> {
        self.write(move |c| {
            let p = &pusher;
            c.execute(
                &push_sql::UPSERT_PUSHER.replace('$', "?"),
                params![
                    p.user_id.as_str(),
                    p.app_id,
                    p.pushkey,
                    p.kind,
                    p.app_display_name,
                    p.device_display_name,
                    p.profile_tag.clone().unwrap_or_default(),
                    p.lang,
                    p.data,
                    p.device_id,
                    p.created_ts
                ],
            )?;
            if !append {
                c.execute(
                    &push_sql::DELETE_OTHER_USERS_PUSHERS.replace('$', "?"),
                    params![p.app_id, p.pushkey, p.user_id.as_str()],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool> {
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |c| {
            let deleted = c.execute(
                &push_sql::DELETE_PUSHER.replace('$', "?"),
                params![user_id.as_str(), app_id, pushkey],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(&push_sql::PUSHERS.replace('$', "?"))?;
            let rows = statement.query_map(params![user_id.as_str()], pusher_row)?;
            rows.map(|row| row?.into_record()).collect()
        })
        .await
    }

    async fn delete_pushers(&self, user_id: &UserId, cleanup: PusherCleanup) -> StoreResult<u64> {
        let user_id = user_id.to_owned();
        self.write(move |c| delete_pushers(c, user_id.as_str(), &cleanup)).await
    }
}

fn delete_pushers(c: &Connection, user_id: &str, cleanup: &PusherCleanup) -> StoreResult<u64> {
    let deleted = match cleanup {
        PusherCleanup::DevicesGone => c.execute(
            &push_sql::DELETE_PUSHERS_OF_GONE_DEVICES.replace('$', "?"),
            params![user_id],
        )?,
        PusherCleanup::AllBut(device_id) => c.execute(
            &push_sql::DELETE_PUSHERS_BUT_DEVICE.replace('$', "?"),
            params![user_id, device_id],
        )?,
    };
    Ok(deleted.try_into()?)
}

fn notification_row(r: &Row<'_>) -> rusqlite::Result<push_sql::NotificationRow> {
    Ok(push_sql::NotificationRow {
        user_id: r.get(0)?,
        stream_position: r.get(1)?,
        room_id: r.get(2)?,
        event_id: r.get(3)?,
        thread_id: r.get(4)?,
        highlight: r.get::<_, i64>(5)? != 0,
        actions: r.get(6)?,
        ts: r.get(7)?,
        read_upto: r.get(8)?,
    })
}

fn pusher_row(r: &Row<'_>) -> rusqlite::Result<push_sql::PusherRow> {
    Ok(push_sql::PusherRow {
        user_id: r.get(0)?,
        app_id: r.get(1)?,
        pushkey: r.get(2)?,
        kind: r.get(3)?,
        app_display_name: r.get(4)?,
        device_display_name: r.get(5)?,
        profile_tag: r.get(6)?,
        lang: r.get(7)?,
        data: r.get(8)?,
        device_id: r.get(9)?,
        created_ts: r.get(10)?,
    })
}
