//! Push rule evaluation: for every new room event, each joined local member but the sender (and
//! a local user the event invites) gets the actions of their push rules, computed by ruma; an
//! event whose actions notify is recorded for that user and published on
//! [`super::NOTIFICATION_SUBJECT`].
//!
//! This follows the bus subject [`crate::rooms::ROOM_EVENT_SUBJECT`], after the event is stored,
//! so sending never waits for it. A room of ten members costs about two small reads per member
//! and event. The counts written here take a stream position of their own, so a sync that ran
//! between the event and its evaluation shows the counts in its next round.
//!
//! FIXME: notifications are kept forever (`GET /notifications` pages through all of them); a
//! household's rooms add a few thousand rows a day, so old read ones will need pruning. A user's
//! own message does not count as reading the room either: only receipts (and the user's own
//! membership events, such as a join) reset the counts.
//!
//! FIXME: the subject is not durable yet (see `crate::bus`): an event published just before the
//! server stops is never evaluated, so it is missing from the counts and `/notifications`.

use ruma::{
    OwnedUserId, RoomId, UInt, UserId,
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde::Deserialize;
use serde_json::Value as JsonValue;

use super::{NOTIFICATION_SUBJECT, NotificationOutput, Push};
use crate::{
    bus::{Bus, Message},
    rooms::{ROOM_EVENT_SUBJECT, RoomEventOutput, Rooms, power::content_of},
    store::{EventRecord, NewNotification},
};

/// The evaluator's handles.
struct Evaluator {
    push: Push,
    bus: Bus,
    rooms: Rooms,
}

/// Starts the evaluator's task. Needs a Tokio runtime.
pub(super) fn start(push: Push, bus: &Bus, rooms: Rooms) {
    let mut events = bus.subscribe(ROOM_EVENT_SUBJECT);
    let evaluator = Evaluator { push, bus: bus.clone(), rooms };
    tokio::spawn(async move {
        while let Some(message) = events.next().await {
            if let Err(error) = evaluator.on_room_event(&message).await {
                tracing::warn!(error = format!("{error:#}"), "cannot evaluate push rules");
            }
        }
    });
}

impl Evaluator {
    async fn on_room_event(&self, message: &Message) -> anyhow::Result<()> {
        let output = message.decode::<RoomEventOutput>()?;
        let store = self.rooms.store();
        let Some(event) = store.event(&output.event_id).await? else { return Ok(()) };
        let joined = store.members_with(&event.room_id, "join").await?;
        let recipients = self.recipients(&event, &output, &joined);
        if recipients.is_empty() {
            return Ok(());
        }
        let power_levels = self
            .rooms
            .power_levels(&event.room_id)
            .await
            .ok()
            .map(PushConditionPowerLevelsCtx::from);
        let member_count = UInt::try_from(joined.len()).unwrap_or_default();
        let raw = Raw::<JsonValue>::from_json(serde_json::value::RawValue::from_string(
            event.pdu.clone(),
        )?);
        let thread_id = thread_of(&event.pdu);
        let mut notifications = Vec::new();
        for user_id in recipients {
            let mut context = PushConditionRoomCtx::new(
                event.room_id.clone(),
                member_count,
                user_id.clone(),
                self.display_name(&event.room_id, &user_id).await?,
            );
            if let Some(power_levels) = &power_levels {
                context = context.with_power_levels(power_levels.clone());
            }
            let rules = self.push.rules(&user_id).await?;
            let actions = rules.get_actions(&raw, &context).await;
            if !actions.iter().any(|action| action.should_notify()) {
                continue;
            }
            notifications.push(NewNotification {
                user_id,
                room_id: event.room_id.clone(),
                event_id: event.event_id.clone(),
                stream_position: event.stream_position,
                thread_id: thread_id.clone(),
                highlight: actions.iter().any(|action| action.is_highlight()),
                actions: serde_json::to_string(actions)?,
                ts: event.origin_server_ts,
            });
        }
        self.record(notifications).await
    }

    /// The local users the event is evaluated for: the joined members but the sender, and the
    /// user a membership event invites.
    fn recipients(
        &self,
        event: &EventRecord,
        output: &RoomEventOutput,
        joined: &[OwnedUserId],
    ) -> Vec<OwnedUserId> {
        let server_name = self.rooms.server_name();
        let mut recipients: Vec<OwnedUserId> = joined
            .iter()
            .filter(|user| user.server_name() == server_name && **user != event.sender)
            .cloned()
            .collect();
        if output.membership.as_deref() == Some("invite")
            && let Some(target) = output.state_key.as_deref()
            && let Ok(target) = OwnedUserId::try_from(target)
            && target.server_name() == server_name
            && !recipients.contains(&target)
        {
            recipients.push(target);
        }
        recipients
    }

    /// The user's display name in the room, empty when they have none.
    async fn display_name(&self, room_id: &RoomId, user_id: &UserId) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Member {
            displayname: Option<String>,
        }
        let member = self
            .rooms
            .store()
            .current_state_event(room_id, "m.room.member", user_id.as_str())
            .await?;
        let name = member.and_then(|m| content_of::<Member>(&m.pdu)).and_then(|m| m.displayname);
        Ok(name.unwrap_or_default())
    }

    /// Stores the notifications of one event and publishes each.
    async fn record(&self, notifications: Vec<NewNotification>) -> anyhow::Result<()> {
        if notifications.is_empty() {
            return Ok(());
        }
        let store = self.rooms.store();
        let notified_position = store.add_notifications(notifications.clone()).await?;
        for n in notifications {
            let output = NotificationOutput {
                user_id: n.user_id,
                room_id: n.room_id,
                event_id: n.event_id,
                notified_position,
                actions: serde_json::from_str(&n.actions)?,
            };
            self.bus.publish(NOTIFICATION_SUBJECT, &output).await?;
        }
        Ok(())
    }
}

/// The thread an event belongs to: its thread root for an event in a thread (an `m.thread`
/// relation), `main` otherwise.
pub fn thread_of(pdu: &str) -> String {
    #[derive(Deserialize)]
    struct Relates {
        rel_type: Option<String>,
        event_id: Option<String>,
    }
    #[derive(Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Relates>,
    }
    let relation = content_of::<Content>(pdu).and_then(|content| content.relates_to);
    match relation {
        // The root is stored as text: it must be an event ID, not whatever a sender wrote.
        Some(Relates { rel_type: Some(rel_type), event_id: Some(root) })
            if rel_type == "m.thread"
                && ruma::EventId::parse(&root).is_ok()
                && root.len() <= 255 =>
        {
            root
        }
        _ => "main".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::thread_of;

    #[test]
    fn an_event_in_a_thread_belongs_to_its_root_and_others_to_main() {
        let threaded =
            r#"{"content":{"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}"#;
        assert_eq!(thread_of(threaded), "$root");
        let reply = r#"{"content":{"m.relates_to":{"m.in_reply_to":{"event_id":"$a"}}}}"#;
        assert_eq!(thread_of(reply), "main");
        assert_eq!(thread_of(r#"{"content":{"body":"x"}}"#), "main");
        assert_eq!(thread_of("not json"), "main");
    }
}
