//! One selected room's entry in a sliding sync answer, and what the connection then holds of it.
//!
//! A room the connection never sent (or sent with another membership) is sent whole, marked
//! `initial`: its latest `timeline_limit` events and its required state. A room sent before is
//! sent again only when something changed: events after the position it was sent to (its
//! `num_live`), required state whose event differs from the one sent (deltas only), or its
//! unread counts. An invite shows its `invite_state` instead of a timeline. A room asked for with
//! a larger `timeline_limit` than it was ever sent with (a client opening a room of its list) is
//! sent whole again, as Synapse does, so that the client gets the longer timeline.

use std::collections::BTreeSet;

use super::{connection::SentRoom, lists::RoomConfig, summary::RoomSummary};
use crate::{
    Result,
    rooms::{
        format::{Format, Viewer, client_events},
        visibility::HistoryView,
    },
    services::Services,
    store::{Direction, EventRecord, RoomEventsQuery},
    sync::{token, v3::raw},
    users::ignored::{IgnoredUsers, is_ignored},
};
use ruma::{
    UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v5::response::{Hero, Room},
    },
};

/// Who asks and up to where.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    pub current: i64,
    /// The users the asker ignores.
    pub ignored: &'a IgnoredUsers,
}

/// What decides whether a room sent before is sent again, besides its events and state.
#[derive(Clone, Copy, Default)]
pub struct Changes {
    /// The user's notification counts grew, or their own read receipt moved.
    pub counts: bool,
}

/// The room's entry, if it is to be sent, and what the connection holds of it afterwards.
pub async fn room_entry(
    services: &Services,
    asker: Asker<'_>,
    summary: &RoomSummary,
    config: &RoomConfig,
    sent: Option<&SentRoom>,
    changes: Changes,
) -> Result<(Option<Room>, SentRoom)> {
    let membership = summary.membership.membership.as_str();
    // An invited or knocking user is no member: they see the stripped state alone.
    let stripped = matches!(membership, "invite" | "knock");
    let sent = sent
        .filter(|s| s.membership == membership)
        .filter(|s| stripped || s.timeline_limit >= config.timeline_limit);
    if stripped {
        return stripped_entry(services, asker, summary, sent).await;
    }
    let upto =
        if membership == "join" { asker.current } else { summary.membership.stream_position };
    let since = sent.map(|s| s.position);
    let timeline = timeline(services, asker, summary, config.timeline_limit, since, upto).await?;

    let mut held = sent.cloned().unwrap_or_default();
    let delta = required_state_delta(summary, config, asker.user_id, &timeline, &mut held);
    held.position = upto;
    held.membership = membership.to_owned();
    held.timeline_limit = held.timeline_limit.max(config.timeline_limit);

    if sent.is_some() && !timeline.any_new && delta.is_empty() && !changes.counts {
        return Ok((None, held));
    }
    let mut room = describe(summary, asker.user_id);
    room.initial = sent.is_none().then_some(true);
    room.unread_notifications = unread_counts(services, asker, summary).await?;
    add_events(services, asker, &mut room, &timeline, &delta).await?;
    let live = since
        .map_or(0, |since| timeline.events.iter().filter(|e| e.stream_position > since).count());
    room.num_live = Some(UInt::try_from(live as u64).unwrap_or(UInt::MAX));
    Ok((Some(room), held))
}

/// The required state the client does not hold yet (what it was sent of each key, in `held`,
/// is another event or nothing); `held` then notes it as sent.
fn required_state_delta(
    summary: &RoomSummary,
    config: &RoomConfig,
    user_id: &UserId,
    timeline: &Timeline,
    held: &mut SentRoom,
) -> Vec<EventRecord> {
    let senders: BTreeSet<&str> = timeline.events.iter().map(|e| e.sender.as_str()).collect();
    let delta: Vec<EventRecord> = summary
        .state
        .iter()
        .filter(|e| is_required(config, e, user_id, &senders))
        .filter(|e| held.state.get(&state_key_of(e)) != Some(&e.event_id))
        .cloned()
        .collect();
    for event in &delta {
        held.state.insert(state_key_of(event), event.event_id.clone());
    }
    delta
}

/// Sets the room's timeline (with `prev_batch` and `limited`) and required state.
async fn add_events(
    services: &Services,
    asker: Asker<'_>,
    room: &mut Room,
    timeline: &Timeline,
    delta: &[EventRecord],
) -> Result<()> {
    let viewer = Viewer { user_id: asker.user_id, device_id: asker.device_id };
    let store = &services.store;
    let events = client_events(store, viewer, &timeline.events, Format::Sync).await?;
    room.timeline = events.iter().map(raw).collect::<Result<_>>()?;
    let state = client_events(store, viewer, delta, Format::Sync).await?;
    room.required_state = state.iter().map(raw).collect::<Result<_>>()?;
    room.prev_batch = Some(token(timeline.start));
    room.limited = timeline.limited;
    Ok(())
}

/// An invite or a knock: sent once, with the stripped state the room shows to those not in it
/// (`invite_state`, which the MSC uses for knocks too). A knocker learns nothing of who is in.
async fn stripped_entry(
    services: &Services,
    asker: Asker<'_>,
    summary: &RoomSummary,
    sent: Option<&SentRoom>,
) -> Result<(Option<Room>, SentRoom)> {
    let membership = summary.membership.membership.clone();
    let held = SentRoom {
        position: asker.current,
        membership: membership.clone(),
        timeline_limit: 0,
        state: sent.map(|s| s.state.clone()).unwrap_or_default(),
    };
    if sent.is_some() {
        return Ok((None, held));
    }
    let mut room = describe(summary, asker.user_id);
    if membership == "knock" {
        (room.heroes, room.joined_count, room.invited_count) = (None, None, None);
    }
    room.initial = Some(true);
    room.invite_state =
        Some(crate::sync::v3::stripped_room_state(services, &summary.membership).await?);
    Ok((Some(room), held))
}

/// The fields every sent room has: name, avatar, heroes, member counts, recency, DM.
fn describe(summary: &RoomSummary, user_id: &UserId) -> Room {
    let mut room = Room::new();
    room.name = Some(summary.display_name(user_id));
    room.avatar = match summary.avatar() {
        Some(url) => ruma::JsOption::Some(url),
        None if summary.state_event("m.room.avatar", "").is_some() => ruma::JsOption::Null,
        None => ruma::JsOption::Undefined,
    };
    let heroes: Vec<Hero> = summary
        .heroes(user_id)
        .into_iter()
        .map(|member| {
            let mut hero = Hero::new(member.user_id);
            hero.name = member.displayname;
            hero.avatar = member.avatar_url;
            hero
        })
        .collect();
    room.heroes = (!heroes.is_empty()).then_some(heroes);
    room.joined_count = Some(uint(summary.count("join")));
    room.invited_count = Some(uint(summary.count("invite")));
    room.bump_stamp = Some(uint(u64::try_from(summary.bump_stamp).unwrap_or_default()));
    room.is_dm = Some(summary.is_dm);
    room
}

fn uint(value: u64) -> UInt {
    UInt::try_from(value).unwrap_or(UInt::MAX)
}

/// The user's unread notification and highlight counts in the room, threads included.
async fn unread_counts(
    services: &Services,
    asker: Asker<'_>,
    summary: &RoomSummary,
) -> Result<UnreadNotificationsCount> {
    let counts = services
        .store
        .notification_counts(asker.user_id, std::slice::from_ref(summary.room_id()))
        .await?;
    let mut total = UnreadNotificationsCount::new();
    total.notification_count = Some(uint(counts.iter().map(|c| c.notifications).sum()));
    total.highlight_count = Some(uint(counts.iter().map(|c| c.highlights).sum()));
    Ok(total)
}

struct Timeline {
    /// The events to send, oldest first.
    events: Vec<EventRecord>,
    /// Whether there were events in the range at all (with a `timeline_limit` of 0, none is sent).
    any_new: bool,
    limited: bool,
    /// The position just before the first event sent: the `prev_batch`.
    start: i64,
}

/// The last `limit` events of `(since, upto]` that the user may see.
async fn timeline(
    services: &Services,
    asker: Asker<'_>,
    summary: &RoomSummary,
    limit: usize,
    since: Option<i64>,
    upto: i64,
) -> Result<Timeline> {
    let store = &services.store;
    let query = RoomEventsQuery {
        room_id: summary.room_id().clone(),
        from: upto + 1,
        to: since,
        direction: Direction::Backward,
        limit: limit + 1,
        types: None,
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: None,
    };
    let mut events = store.room_events(query).await?;
    let any_new = !events.is_empty();
    let limited = events.len() > limit;
    events.truncate(limit);
    events.reverse();
    let start = events.first().map_or(upto, |e| e.stream_position - 1);
    if !events.is_empty() {
        let view = HistoryView::load(store, summary.room_id(), asker.user_id).await?;
        events.retain(|event| view.allows(event));
        events.retain(|e| !is_ignored(asker.ignored, &e.sender, e.state_key.is_some()));
    }
    Ok(Timeline { events, any_new, limited, start })
}

fn state_key_of(event: &EventRecord) -> (String, String) {
    (event.event_type.clone(), event.state_key.clone().unwrap_or_default())
}

/// Whether a state event is asked for by one of the room's `required_state` patterns: `*` for
/// any type or key, `$ME` for the user's own key, `$LAZY` (members only) for the senders of the
/// timeline sent.
fn is_required(
    config: &RoomConfig,
    event: &EventRecord,
    user_id: &UserId,
    senders: &BTreeSet<&str>,
) -> bool {
    let key = event.state_key.as_deref().unwrap_or_default();
    config.required_state.iter().any(|(event_type, pattern)| {
        let type_matches = event_type == "*" || *event_type == event.event_type;
        let key_matches = match pattern.as_str() {
            "*" => true,
            "$ME" => key == user_id.as_str(),
            "$LAZY" => event.event_type == "m.room.member" && senders.contains(key),
            exact => exact == key,
        };
        type_matches && key_matches
    })
}
