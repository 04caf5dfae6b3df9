//! Push notifications: each user's push rules, the notifications they give for new events, the
//! unread counts `/sync` shows, `GET /notifications`, and the pushers that forward notifications
//! to push gateways.
//!
//! A user's rules are the global account data `m.push_rules` (`{"global": ruleset}`), changed
//! only here; a user who never changed them has the spec's defaults. Evaluation
//! (`evaluate`) follows [`crate::rooms::ROOM_EVENT_SUBJECT`] and records what notified whom;
//! delivery (`gateway`) follows [`NOTIFICATION_SUBJECT`] and posts to the gateways, off every
//! request path. This module never speaks HTTP to clients, and never logs a push key.

pub mod evaluate;
pub mod gateway;
pub mod rules;

use std::{sync::Arc, time::Duration};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::push::{Pusher, PusherKind, get_notifications::v3::Notification, set_pusher},
    push::{Action, HttpPusherData, Ruleset},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    Error, Result,
    bus::Bus,
    rooms::{
        Rooms,
        format::{Format, Viewer, client_events},
    },
    store::{NotificationsQuery, PusherRecord, Store},
    users::Users,
};

/// The bus subject each new notification of a user is published on.
pub const NOTIFICATION_SUBJECT: &str = "push.output.notification";

/// What is published on [`NOTIFICATION_SUBJECT`]: one event that notified one user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationOutput {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// Where the user's counts changed on the stream (wakes their syncs).
    pub notified_position: i64,
    pub actions: Vec<Action>,
}

/// The longest push key the spec allows, in bytes.
const MAX_PUSHKEY: usize = 512;
/// The longest app ID the spec allows, in characters.
const MAX_APP_ID: usize = 64;
/// The longest display name, language or profile tag taken, in bytes.
const MAX_PUSHER_TEXT: usize = 1_000;
/// The largest `data` object taken, as JSON.
const MAX_PUSHER_DATA: usize = 4_096;
/// The most pushers a user may have: each notification is posted to each of them, and a
/// household's devices are far fewer.
pub const MAX_PUSHERS: usize = 20;
/// The path every push gateway serves.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// The default and the largest page of `GET /notifications`.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The push service. Cheap to clone.
#[derive(Clone)]
pub struct Push {
    store: Store,
    users: Users,
    /// The stream position of the latest room event whose notifications are recorded (see
    /// [`Self::wait_for_counts`]).
    evaluated: Arc<watch::Sender<i64>>,
}

/// How delivery to a gateway retries after a 5xx answer or a connection failure.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// How many times a notification is tried in all.
    pub attempts: u32,
    /// The wait before the second try; each later wait doubles.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, first_delay: Duration::from_secs(1) }
    }
}

impl Push {
    /// Starts evaluating new room events and delivering notifications. Needs a Tokio runtime.
    pub fn start(store: Store, bus: &Bus, users: Users, rooms: Rooms, retry: RetryPolicy) -> Self {
        let evaluated = Arc::new(watch::channel(0).0);
        let push = Self { store: store.clone(), users, evaluated };
        evaluate::start(push.clone(), bus, rooms);
        gateway::start(store, bus, retry);
        push
    }

    /// Waits (at most `within`) until the notifications of the room events up to `position`
    /// are recorded, so that a sync shows a new message together with the counts it changed
    /// rather than the counts in an answer of their own just after. Returns at once when push
    /// evaluation has caught up, as it has but for a moment after each event.
    pub async fn wait_for_counts(&self, position: i64, within: Duration) {
        let mut evaluated = self.evaluated.subscribe();
        let caught_up = evaluated.wait_for(|&evaluated| evaluated >= position);
        // Past the wait, the sync answers now and the counts follow in a later answer.
        let _ = tokio::time::timeout(within, caught_up).await;
    }

    /// Records that the events up to `position` are evaluated.
    fn mark_evaluated(&self, position: i64) {
        self.evaluated.send_if_modified(|evaluated| {
            let advanced = position > *evaluated;
            *evaluated = (*evaluated).max(position);
            advanced
        });
    }

    /// The user's push rules: what they stored, with today's server-default rules, or only the
    /// defaults.
    pub async fn rules(&self, user_id: &UserId) -> Result<Ruleset> {
        let stored = self.store.account_data(user_id, None, rules::PUSH_RULES).await?;
        let defaults = Ruleset::server_default(user_id);
        let Some(stored) = stored else { return Ok(defaults) };
        let Ok(mut content) = serde_json::from_str::<PushRulesContent>(stored.get()) else {
            tracing::warn!(%user_id, "stored push rules are unreadable; using the defaults");
            return Ok(defaults);
        };
        content.global.update_with_server_default(defaults);
        Ok(content.global)
    }

    /// Changes the user's push rules with `change` and stores them, unless it fails. Changes of
    /// one user are serialized, so none is lost.
    pub async fn change_rules<T>(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<T>,
    ) -> Result<T> {
        let _serial = self.users.lock_account_data().await;
        let mut rules = self.rules(user_id).await?;
        let answer = change(&mut rules)?;
        let content = serde_json::value::to_raw_value(&json!({ "global": rules }))
            .map_err(anyhow::Error::from)?;
        self.users.set_account_data(user_id, None, rules::PUSH_RULES, &content).await?;
        Ok(answer)
    }

    /// The user's pushers, as `GET /pushers` shows them.
    pub async fn pushers(&self, user_id: &UserId) -> Result<Vec<Pusher>> {
        let records = self.store.pushers(user_id).await?;
        records.iter().map(pusher_of_record).collect()
    }

    /// Creates, replaces or deletes a pusher as `POST /pushers/set` asks; `device_id` is the
    /// device of the access token that asks.
    pub async fn set_pusher(
        &self,
        user_id: &UserId,
        device_id: &str,
        action: set_pusher::v3::PusherAction,
    ) -> Result<()> {
        match action {
            set_pusher::v3::PusherAction::Post(post) => {
                let record = pusher_record(user_id, device_id, post.pusher)?;
                self.check_pusher_count(&record).await?;
                self.store.set_pusher(record, post.append).await?;
            }
            set_pusher::v3::PusherAction::Delete(ids) => {
                check_ids(&ids)?;
                self.store.delete_pusher(user_id, &ids.app_id, &ids.pushkey).await?;
            }
            _ => return Err(Error::invalid_param("Unknown pusher action")),
        }
        Ok(())
    }

    /// Refuses a new pusher beyond [`MAX_PUSHERS`]; replacing one of the user's is always fine.
    async fn check_pusher_count(&self, new: &PusherRecord) -> Result<()> {
        let pushers = self.store.pushers(&new.user_id).await?;
        let replaces = pushers.iter().any(|p| p.app_id == new.app_id && p.pushkey == new.pushkey);
        if !replaces && pushers.len() >= MAX_PUSHERS {
            return Err(Error::forbidden(format!(
                "A user may have at most {MAX_PUSHERS} pushers: delete one first"
            )));
        }
        Ok(())
    }

    /// A page of `GET /notifications`: newest first, before the `from` token, and the token of
    /// the next page if there may be one.
    pub async fn notifications(
        &self,
        viewer: Viewer<'_>,
        page: NotificationsPage<'_>,
    ) -> Result<(Vec<Notification>, Option<String>)> {
        let before = match page.from {
            Some(from) => {
                Some(from.parse::<i64>().map_err(|_| Error::invalid_param("Invalid from token"))?)
            }
            None => None,
        };
        let limit = page
            .limit
            .map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT))
            .clamp(1, MAX_LIMIT);
        let query = NotificationsQuery {
            user_id: viewer.user_id.to_owned(),
            before,
            limit,
            only_highlight: page.only.is_some_and(|only| only.contains("highlight")),
        };
        let records = self.store.notifications(query).await?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.notification.stream_position.to_string()))
            .flatten();
        let ids: Vec<OwnedEventId> =
            records.iter().map(|r| r.notification.event_id.clone()).collect();
        let events = self.store.events(&ids).await?;
        let shown = client_events(&self.store, viewer, &events, Format::Client).await?;
        let mut notifications = Vec::new();
        for record in &records {
            let n = &record.notification;
            let Some(index) = events.iter().position(|e| e.event_id == n.event_id) else {
                continue;
            };
            let actions: Vec<Action> =
                serde_json::from_str(&n.actions).map_err(anyhow::Error::from)?;
            let event =
                serde_json::value::to_raw_value(&shown[index]).map_err(anyhow::Error::from)?;
            let ts =
                ruma::MilliSecondsSinceUnixEpoch(UInt::try_from(n.ts.max(0)).unwrap_or_default());
            notifications.push(Notification::new(
                actions,
                Raw::from_json(event),
                record.read,
                n.room_id.clone(),
                ts,
            ));
        }
        Ok((notifications, next))
    }
}

/// The query of `GET /notifications`.
pub struct NotificationsPage<'a> {
    pub from: Option<&'a str>,
    pub limit: Option<UInt>,
    pub only: Option<&'a str>,
}

/// The content of `m.push_rules`.
#[derive(Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

fn check_ids(ids: &ruma::api::client::push::PusherIds) -> Result<()> {
    if ids.pushkey.is_empty() || ids.pushkey.len() > MAX_PUSHKEY {
        return Err(Error::invalid_param("pushkey must have 1 to 512 bytes"));
    }
    if ids.app_id.is_empty() || ids.app_id.chars().count() > MAX_APP_ID {
        return Err(Error::invalid_param("app_id must have 1 to 64 characters"));
    }
    Error::check_no_nul("pushkey", &ids.pushkey)?;
    Error::check_no_nul("app_id", &ids.app_id)
}

/// Checks a pusher a client sets and turns it into a row.
fn pusher_record(user_id: &UserId, device_id: &str, pusher: Pusher) -> Result<PusherRecord> {
    check_ids(&pusher.ids)?;
    let texts = [&pusher.app_display_name, &pusher.device_display_name, &pusher.lang];
    if texts.iter().any(|text| text.len() > MAX_PUSHER_TEXT)
        || pusher.profile_tag.as_ref().is_some_and(|tag| tag.len() > MAX_PUSHER_TEXT)
    {
        return Err(Error::invalid_param("A pusher field is longer than 1000 bytes"));
    }
    for (field, text) in [
        ("app_display_name", &pusher.app_display_name),
        ("device_display_name", &pusher.device_display_name),
        ("lang", &pusher.lang),
    ] {
        Error::check_no_nul(field, text)?;
    }
    Error::check_no_nul("profile_tag", pusher.profile_tag.as_deref().unwrap_or_default())?;
    let PusherKind::Http(data) = pusher.kind else {
        // FIXME: email pushers need an email sender, which Hearth does not have.
        return Err(Error::invalid_param("Only http pushers are supported"));
    };
    gateway::check_url(&data.url)?;
    let data = serde_json::to_string(&data).map_err(anyhow::Error::from)?;
    if data.len() > MAX_PUSHER_DATA {
        return Err(Error::invalid_param("The pusher's data is larger than 4096 bytes"));
    }
    Ok(PusherRecord {
        user_id: user_id.to_owned(),
        app_id: pusher.ids.app_id,
        pushkey: pusher.ids.pushkey,
        kind: "http".to_owned(),
        app_display_name: pusher.app_display_name,
        device_display_name: pusher.device_display_name,
        profile_tag: pusher.profile_tag,
        lang: pusher.lang,
        data,
        device_id: device_id.to_owned(),
        created_ts: crate::users::now_millis(),
    })
}

/// A stored pusher as the client API shows it.
fn pusher_of_record(record: &PusherRecord) -> Result<Pusher> {
    let data: HttpPusherData = serde_json::from_str(&record.data).map_err(anyhow::Error::from)?;
    let mut shown = json!({
        "pushkey": record.pushkey,
        "app_id": record.app_id,
        "kind": record.kind,
        "app_display_name": record.app_display_name,
        "device_display_name": record.device_display_name,
        "lang": record.lang,
        "data": data,
    });
    if let Some(tag) = &record.profile_tag {
        shown["profile_tag"] = json!(tag);
    }
    Ok(serde_json::from_value(shown).map_err(anyhow::Error::from)?)
}
