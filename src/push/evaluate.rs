//! Push rule evaluation: for every new room event, each joined local member but the sender (and
//! a local user the event invites) gets the actions of their push rules, computed by ruma; an
//! event whose actions notify is recorded for that user and published on
//! [`super::NOTIFICATION_SUBJECT`].
//!
//! This follows the bus subject [`crate::rooms::ROOM_EVENT_SUBJECT`], after the event is stored,
//! so sending never waits for it. Events are evaluated in batches of what has queued up since the
//! last one: each room of a batch is read once (its members, their display names and its power
//! levels) and each recipient's rules once, and the batch's notifications are written in one
//! write, so that a busy room's members are kept up with however fast its messages come. The
//! counts written here take a stream position of their own; after each batch the evaluator marks
//! the batch's last event evaluated, which syncs wait for (briefly: see
//! [`super::Push::wait_for_counts`]) so that they show a message with the counts it changed. What a room and a user are evaluated
//! with is their state when the batch is read, as it was when each event was evaluated alone.
//!
//! FIXME: notifications are kept forever (`GET /notifications` pages through all of them); a
//! household's rooms add a few thousand rows a day, so old read ones will need pruning. A user's
//! own message does not count as reading the room either: only receipts (and the user's own
//! membership events, such as a join) reset the counts.
//!
//! FIXME: the subject is not durable yet (see `crate::bus`): an event published just before the
//! server stops is never evaluated, so it is missing from the counts and `/notifications`.

use std::collections::BTreeMap;

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde::Deserialize;
use serde_json::Value as JsonValue;

use super::{NOTIFICATION_SUBJECT, NotificationOutput, Push};
use crate::{
    bus::{Bus, Message, Subscription},
    rooms::{ROOM_EVENT_SUBJECT, RoomEventOutput, Rooms, power::content_of},
    store::{EventRecord, NewNotification},
};

/// The most room events evaluated together. A batch is what queued up while the previous one
/// was evaluated, so a quiet server evaluates each event alone, at once.
const MAX_BATCH: usize = 256;

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
        while let Some(batch) = next_batch(&mut events).await {
            let outputs = decode(&batch);
            if let Err(error) = evaluator.on_room_events(&outputs).await {
                tracing::warn!(error = format!("{error:#}"), "cannot evaluate push rules");
            }
            // Also after a failure: syncs waiting for these counts are not kept waiting.
            if let Some(last) = outputs.iter().map(|output| output.stream_position).max() {
                evaluator.push.mark_evaluated(last);
            }
        }
    });
}

/// Waits for a room event, then takes the others already queued, up to [`MAX_BATCH`].
async fn next_batch(events: &mut Subscription) -> Option<Vec<Message>> {
    let mut batch = vec![events.next().await?];
    while batch.len() < MAX_BATCH {
        match events.try_next() {
            Some(message) => batch.push(message),
            None => break,
        }
    }
    Some(batch)
}

/// The room events of a batch; one that cannot be decoded is logged and skipped.
fn decode(batch: &[Message]) -> Vec<RoomEventOutput> {
    batch
        .iter()
        .filter_map(|message| match message.decode::<RoomEventOutput>() {
            Ok(output) => Some(output),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "skipping a room event");
                None
            }
        })
        .collect()
}

/// What the events of one room are evaluated with, read once per batch.
struct RoomContext {
    /// The joined members.
    joined: Vec<OwnedUserId>,
    /// Display names of the members who have one.
    display_names: BTreeMap<OwnedUserId, String>,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

/// The rooms and rules a batch has read so far.
#[derive(Default)]
struct BatchCache {
    rooms: BTreeMap<OwnedRoomId, RoomContext>,
    rules: BTreeMap<OwnedUserId, Ruleset>,
}

impl Evaluator {
    /// Evaluates a batch of room events in stream order and records what notified whom. An
    /// event that cannot be evaluated is logged and skipped; the others are still recorded.
    async fn on_room_events(&self, outputs: &[RoomEventOutput]) -> anyhow::Result<()> {
        let ids: Vec<OwnedEventId> = outputs.iter().map(|o| o.event_id.clone()).collect();
        let mut events: BTreeMap<OwnedEventId, EventRecord> = self
            .rooms
            .store()
            .events(&ids)
            .await?
            .into_iter()
            .map(|event| (event.event_id.clone(), event))
            .collect();
        let mut cache = BatchCache::default();
        let mut notifications = Vec::new();
        for output in outputs {
            let Some(event) = events.remove(&output.event_id) else { continue };
            match self.evaluate(&event, output, &mut cache).await {
                Ok(mut notified) => notifications.append(&mut notified),
                Err(error) => tracing::warn!(
                    event_id = %event.event_id,
                    error = format!("{error:#}"),
                    "cannot evaluate push rules for an event"
                ),
            }
        }
        self.record(notifications).await
    }

    /// The notifications one event gives its recipients.
    async fn evaluate(
        &self,
        event: &EventRecord,
        output: &RoomEventOutput,
        cache: &mut BatchCache,
    ) -> anyhow::Result<Vec<NewNotification>> {
        let room = self.room_context(&event.room_id, &mut cache.rooms).await?;
        let recipients = self.recipients(event, output, &room.joined);
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let member_count = UInt::try_from(room.joined.len()).unwrap_or_default();
        let raw = Raw::<JsonValue>::from_json(serde_json::value::RawValue::from_string(
            event.pdu.clone(),
        )?);
        let thread_id = thread_of(&event.pdu);
        let mut notifications = Vec::new();
        for user_id in recipients {
            let display_name = room.display_names.get(&user_id).cloned().unwrap_or_default();
            let mut context = PushConditionRoomCtx::new(
                event.room_id.clone(),
                member_count,
                user_id.clone(),
                display_name,
            );
            if let Some(power_levels) = &room.power_levels {
                context = context.with_power_levels(power_levels.clone());
            }
            let rules = self.rules(&user_id, &mut cache.rules).await?;
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
        Ok(notifications)
    }

    /// The room's context, read at its first event in the batch.
    async fn room_context<'a>(
        &self,
        room_id: &RoomId,
        rooms: &'a mut BTreeMap<OwnedRoomId, RoomContext>,
    ) -> anyhow::Result<&'a RoomContext> {
        if !rooms.contains_key(room_id) {
            let context = self.read_room_context(room_id).await?;
            rooms.insert(room_id.to_owned(), context);
        }
        rooms.get(room_id).ok_or_else(|| anyhow::anyhow!("the room's context was just read"))
    }

    async fn read_room_context(&self, room_id: &RoomId) -> anyhow::Result<RoomContext> {
        #[derive(Deserialize)]
        struct Member {
            displayname: Option<String>,
        }
        let store = self.rooms.store();
        let joined = store.members_with(room_id, "join").await?;
        let display_names = store
            .current_state(room_id)
            .await?
            .into_iter()
            .filter(|record| record.event_type == "m.room.member")
            .filter_map(|record| {
                let user_id = OwnedUserId::try_from(record.state_key?).ok()?;
                let name = content_of::<Member>(&record.pdu)?.displayname?;
                Some((user_id, name))
            })
            .collect();
        let power_levels =
            self.rooms.power_levels(room_id).await.ok().map(PushConditionPowerLevelsCtx::from);
        Ok(RoomContext { joined, display_names, power_levels })
    }

    /// The user's push rules, read at their first event in the batch.
    async fn rules<'a>(
        &self,
        user_id: &UserId,
        rules: &'a mut BTreeMap<OwnedUserId, Ruleset>,
    ) -> anyhow::Result<&'a Ruleset> {
        if !rules.contains_key(user_id) {
            let ruleset = self.push.rules(user_id).await?;
            rules.insert(user_id.to_owned(), ruleset);
        }
        rules.get(user_id).ok_or_else(|| anyhow::anyhow!("the user's rules were just read"))
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

    /// Stores the notifications of a batch in one write and publishes each.
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
