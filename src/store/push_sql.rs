//! The SQL of push notifications and pushers that both backends run word for word (PostgreSQL's
//! `$n` placeholders; SQLite reads them as `?n`), and the rows they read before they are typed.

use crate::store::{NewNotification, NotificationRecord, PusherRecord, StoreResult};

pub(crate) const INSERT_NOTIFICATION: &str = "INSERT INTO push_notifications
    (user_id, stream_position, room_id, event_id, thread_id, highlight, actions, ts,
     notified_position)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (user_id, stream_position) DO NOTHING";

/// The position up to which a user has read a notification's thread: the latest of their
/// unthreaded receipts and their receipts of that thread (`n` is the notification's row).
const READ_UPTO: &str = "COALESCE((SELECT MAX(r.event_position) FROM receipts r
    WHERE r.room_id = n.room_id AND r.user_id = n.user_id
      AND r.thread_id IN ('', n.thread_id) AND r.receipt_type IN ('m.read', 'm.read.private')),
    0)";

/// Unread counts per thread of one room (`$1` user, `$2` room). The first bounds, the user's
/// current membership event (what came before they joined, such as their invite, is not unread
/// in the room) and the unthreaded receipt, let the index skip everything before them.
pub(crate) static COUNTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT n.thread_id, COUNT(*), SUM(n.highlight) FROM push_notifications n
         WHERE n.user_id = $1 AND n.room_id = $2
           AND n.stream_position > COALESCE((SELECT m.stream_position FROM current_state m
               WHERE m.room_id = $2 AND m.event_type = 'm.room.member' AND m.state_key = $1), 0)
           AND n.stream_position > COALESCE((SELECT MAX(u.event_position) FROM receipts u
               WHERE u.room_id = $2 AND u.user_id = $1 AND u.thread_id = ''
                 AND u.receipt_type IN ('m.read', 'm.read.private')), 0)
           AND n.stream_position > {READ_UPTO}
         GROUP BY n.thread_id ORDER BY n.thread_id"
    )
});

pub(crate) const NEW_NOTIFICATION_ROOMS: &str = "SELECT DISTINCT room_id FROM push_notifications
    WHERE user_id = $1 AND notified_position > $2 AND notified_position <= $3";

/// A page of notifications (`$1` user, `$2` before, `$3` 1 for highlights only, `$4` limit).
pub(crate) static NOTIFICATIONS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT n.user_id, n.stream_position, n.room_id, n.event_id, n.thread_id, n.highlight,
                n.actions, n.ts, {READ_UPTO}
         FROM push_notifications n
         WHERE n.user_id = $1 AND n.stream_position < $2 AND ($3 = 0 OR n.highlight = 1)
         ORDER BY n.stream_position DESC LIMIT $4"
    )
});

pub(crate) const UPSERT_PUSHER: &str = "INSERT INTO pushers
    (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
     data, device_id, created_ts)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (user_id, app_id, pushkey) DO UPDATE
    SET kind = excluded.kind, app_display_name = excluded.app_display_name,
        device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,
        lang = excluded.lang, data = excluded.data, device_id = excluded.device_id";

pub(crate) const DELETE_OTHER_USERS_PUSHERS: &str =
    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3";

pub(crate) const DELETE_PUSHER: &str =
    "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3";

pub(crate) const PUSHERS: &str = "SELECT user_id, app_id, pushkey, kind, app_display_name,
    device_display_name, profile_tag, lang, data, device_id, created_ts
    FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey";

pub(crate) const DELETE_PUSHERS_OF_GONE_DEVICES: &str = "DELETE FROM pushers
    WHERE user_id = $1 AND device_id NOT IN (SELECT device_id FROM devices WHERE user_id = $1)";

pub(crate) const DELETE_PUSHERS_BUT_DEVICE: &str =
    "DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2";

/// A notification row as read, before its IDs are checked.
pub(crate) struct NotificationRow {
    pub user_id: String,
    pub stream_position: i64,
    pub room_id: String,
    pub event_id: String,
    pub thread_id: String,
    pub highlight: bool,
    pub actions: String,
    pub ts: i64,
    pub read_upto: i64,
}

impl NotificationRow {
    pub(crate) fn into_record(self) -> StoreResult<NotificationRecord> {
        let read = self.stream_position <= self.read_upto;
        let notification = NewNotification {
            user_id: self.user_id.try_into()?,
            room_id: self.room_id.try_into()?,
            event_id: self.event_id.try_into()?,
            stream_position: self.stream_position,
            thread_id: self.thread_id,
            highlight: self.highlight,
            actions: self.actions,
            ts: self.ts,
        };
        Ok(NotificationRecord { notification, read })
    }
}

/// A pusher row as read, before its IDs are checked.
pub(crate) struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: String,
    pub lang: String,
    pub data: String,
    pub device_id: String,
    pub created_ts: i64,
}

impl PusherRow {
    pub(crate) fn into_record(self) -> StoreResult<PusherRecord> {
        Ok(PusherRecord {
            user_id: self.user_id.try_into()?,
            app_id: self.app_id,
            pushkey: self.pushkey,
            kind: self.kind,
            app_display_name: self.app_display_name,
            device_display_name: self.device_display_name,
            profile_tag: Some(self.profile_tag).filter(|tag| !tag.is_empty()),
            lang: self.lang,
            data: self.data,
            device_id: self.device_id,
            created_ts: self.created_ts,
        })
    }
}
