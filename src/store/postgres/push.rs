//! PostgreSQL queries for push notifications and pushers.

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};
use tokio_postgres::Row;

use super::{Conn, PostgresStore, execute, flag, next_stream_position, query};
use crate::store::{
    NewNotification, NotificationCount, NotificationRecord, NotificationsQuery, PushStore,
    PusherCleanup, PusherRecord, StoreResult, push_sql,
};

#[async_trait]
impl PushStore for PostgresStore {
    async fn add_notifications(&self, notifications: Vec<NewNotification>) -> StoreResult<i64> {
        self.write(move |w| w.block_on(insert_notifications(w.conn(), &notifications))).await
    }

    async fn notification_counts(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<NotificationCount>> {
        let c = self.conn().await?;
        let mut counts = Vec::new();
        for room_id in room_ids {
            let rows =
                query(&c, &push_sql::COUNTS, &[&user_id.as_str(), &room_id.as_str()]).await?;
            for row in rows {
                counts.push(NotificationCount {
                    room_id: room_id.clone(),
                    thread_id: row.try_get(0)?,
                    notifications: row.try_get::<_, i64>(1)?.try_into()?,
                    highlights: row.try_get::<_, i64>(2)?.try_into()?,
                });
            }
        }
        Ok(counts)
    }

    async fn rooms_with_new_notifications(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let rows = query(
            &*self.conn().await?,
            push_sql::NEW_NOTIFICATION_ROOMS,
            &[&user_id.as_str(), &after, &upto],
        )
        .await?;
        let found = rows.iter().map(|row| row.try_get(0)).collect::<Result<Vec<String>, _>>()?;
        Ok(room_ids.iter().filter(|id| found.iter().any(|f| f == id.as_str())).cloned().collect())
    }

    async fn notifications(
        &self,
        query_: NotificationsQuery,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let before = query_.before.unwrap_or(i64::MAX);
        let limit = i64::try_from(query_.limit)?;
        let rows = query(
            &*self.conn().await?,
            &push_sql::NOTIFICATIONS,
            &[&query_.user_id.as_str(), &before, &flag(query_.only_highlight), &limit],
        )
        .await?;
        rows.iter().map(|row| notification_row(row)?.into_record()).collect()
    }

    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()> {
        self.write(move |w| w.block_on(upsert_pusher(w.conn(), &pusher, append))).await
    }

    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool> {
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(move |w| {
            w.block_on(async {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&user_id.as_str(), &app_id, &pushkey];
                Ok(execute(w.conn(), push_sql::DELETE_PUSHER, &params).await? > 0)
            })
        })
        .await
    }

    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>> {
        let rows = query(&*self.conn().await?, push_sql::PUSHERS, &[&user_id.as_str()]).await?;
        rows.iter().map(|row| pusher_row(row)?.into_record()).collect()
    }

    async fn delete_pushers(&self, user_id: &UserId, cleanup: PusherCleanup) -> StoreResult<u64> {
        let user_id = user_id.to_owned();
        self.write(move |w| w.block_on(delete_pushers(w.conn(), user_id.as_str(), &cleanup))).await
    }
}

async fn insert_notifications(c: &Conn, notifications: &[NewNotification]) -> StoreResult<i64> {
    let position = next_stream_position(c).await?;
    for n in notifications {
        execute(
            c,
            push_sql::INSERT_NOTIFICATION,
            &[
                &n.user_id.as_str(),
                &n.stream_position,
                &n.room_id.as_str(),
                &n.event_id.as_str(),
                &n.thread_id,
                &flag(n.highlight),
                &n.actions,
                &n.ts,
                &position,
            ],
        )
        .await?;
    }
    Ok(position)
}

async fn upsert_pusher(c: &Conn, p: &PusherRecord, append: bool) -> StoreResult<()> {
    let profile_tag = p.profile_tag.clone().unwrap_or_default();
    execute(
        c,
        push_sql::UPSERT_PUSHER,
        &[
            &p.user_id.as_str(),
            &p.app_id,
            &p.pushkey,
            &p.kind,
            &p.app_display_name,
            &p.device_display_name,
            &profile_tag,
            &p.lang,
            &p.data,
            &p.device_id,
            &p.created_ts,
        ],
    )
    .await?;
    if !append {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&p.app_id, &p.pushkey, &p.user_id.as_str()];
        execute(c, push_sql::DELETE_OTHER_USERS_PUSHERS, &params).await?;
    }
    Ok(())
}

async fn delete_pushers(c: &Conn, user_id: &str, cleanup: &PusherCleanup) -> StoreResult<u64> {
    match cleanup {
        PusherCleanup::DevicesGone => {
            execute(c, push_sql::DELETE_PUSHERS_OF_GONE_DEVICES, &[&user_id]).await
        }
        PusherCleanup::AllBut(device_id) => {
            execute(c, push_sql::DELETE_PUSHERS_BUT_DEVICE, &[&user_id, device_id]).await
        }
    }
}

fn notification_row(r: &Row) -> StoreResult<push_sql::NotificationRow> {
    Ok(push_sql::NotificationRow {
        user_id: r.try_get(0)?,
        stream_position: r.try_get(1)?,
        room_id: r.try_get(2)?,
        event_id: r.try_get(3)?,
        thread_id: r.try_get(4)?,
        highlight: r.try_get::<_, i32>(5)? != 0,
        actions: r.try_get(6)?,
        ts: r.try_get(7)?,
        read_upto: r.try_get(8)?,
    })
}

fn pusher_row(r: &Row) -> StoreResult<push_sql::PusherRow> {
    Ok(push_sql::PusherRow {
        user_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        pushkey: r.try_get(2)?,
        kind: r.try_get(3)?,
        app_display_name: r.try_get(4)?,
        device_display_name: r.try_get(5)?,
        profile_tag: r.try_get(6)?,
        lang: r.try_get(7)?,
        data: r.try_get(8)?,
        device_id: r.try_get(9)?,
        created_ts: r.try_get(10)?,
    })
}
