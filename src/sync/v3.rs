//! `GET /_matrix/client/v3/sync`.
//!
//! An initial sync (no `since`) returns every room the user is in with its latest timeline and
//! the state before it. An incremental sync returns what changed after `since`; a room the user
//! joined in that range is returned as if initial. When nothing changed, the request waits (up
//! to `timeout`) for the notifier to wake it. A joined room also shows who types in it (an
//! `m.typing` ephemeral event) when that changed after the token's typing serial, and the read
//! receipts that changed after the token's position (an `m.receipt` event), and its unread
//! notification counts whenever it is shown (a room whose counts changed after the token is shown
//! for them alone), and its summary when new or changed (see [`super::summary`]). A room the user
//! knocked on is in `rooms.knock` with its stripped state, as an invite is in `rooms.invite`.
//! Every sync also carries the device's to-device messages and key counts, an incremental one
//! whose device lists changed (see [`crate::keys`]), and the presence of the users sharing a
//! room with the user that changed after the token (see [`crate::presence`]; the sync itself
//! marks the user online or idle as its `set_presence` says). The rooms are read concurrently
//! and their events formatted together, in one batch for the whole response.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};

use ruma::{
    OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{
            Ephemeral, GlobalAccountData, InviteState, InvitedRoom, JoinedRoom, KnockState,
            KnockedRoom, LeftRoom, Response, RoomAccountData, State, StateEvents, Timeline,
        },
    },
    events::AnySyncEphemeralRoomEvent,
    serde::Raw,
};
use serde_json::Value as JsonValue;

use super::{SyncFilter, sync_token, token};
use crate::{
    Result,
    push::rules::PUSH_RULES,
    rooms::{
        format::{Format, Viewer, client_events},
        pdu::stripped_state,
        receipts::receipt_content,
        visibility::HistoryView,
    },
    services::Services,
    store::{AccountDataRecord, Direction, EventRecord, MembershipRecord, ReceiptRecord},
};

/// The longest a long poll (`/sync`, `/events`) waits, whatever the client asks.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// The state types shown with an invite.
const INVITE_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// A parsed `/sync` request.
pub struct SyncRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub since: Option<i64>,
    /// The typing serial of the `since` token; `None` for a token without one.
    pub since_typing: Option<u64>,
    /// The last to-device message the `since` token acknowledges.
    pub since_to_device: Option<i64>,
    /// The presence serial of the `since` token; `None` for a token without one.
    pub since_presence: Option<u64>,
    /// What the sync says of the user's presence (`set_presence`).
    pub set_presence: ruma::presence::PresenceState,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: SyncFilter,
}

/// Answers a sync request, waiting for news if there is none.
pub async fn sync(services: &Services, request: SyncRequest) -> Result<Response> {
    let _syncing = services.presence.sync_started(&request.user_id, &request.set_presence).await;
    let mut wake = services.notifier.watch(&request.user_id);
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    loop {
        let current = super::current_position(services).await?;
        let response = compute(services, &request, current).await?;
        let may_wait = request.since.is_some() && !request.full_state;
        if !may_wait || !is_empty(&response) || tokio::time::Instant::now() >= deadline {
            return Ok(response);
        }
        if tokio::time::timeout_at(deadline, wake.changed()).await.is_err() {
            return Ok(response);
        }
    }
}

fn is_empty(response: &Response) -> bool {
    let rooms = &response.rooms;
    rooms.join.is_empty()
        && rooms.invite.is_empty()
        && rooms.leave.is_empty()
        && rooms.knock.is_empty()
        && response.account_data.events.is_empty()
        && response.to_device.is_empty()
        && response.device_lists.is_empty()
        && response.presence.is_empty()
}

/// The end-to-end encryption parts of the response: the device's to-device messages, whose
/// device lists changed (incremental syncs only), and the device's one-time and fallback keys,
/// read concurrently. Returns the position of the last to-device message the token is to
/// acknowledge.
async fn add_encryption(
    services: &Services,
    request: &SyncRequest,
    current: i64,
    response: &mut Response,
) -> Result<i64> {
    let keys = &services.e2ee;
    let (user_id, device_id) = (&request.user_id, request.device_id.as_str());
    let device_lists = async {
        match request.since {
            Some(since) => keys.device_list_updates(user_id, since, current).await.map(Some),
            None => Ok(None),
        }
    };
    let (batch, device_lists, one_time_keys, fallback_types) = futures::try_join!(
        keys.to_device_for_sync(user_id, device_id, request.since_to_device, current),
        device_lists,
        keys.one_time_key_counts(user_id, device_id),
        keys.unused_fallback_key_types(user_id, device_id),
    )?;
    response.to_device.events = batch.events;
    if let Some(updates) = device_lists {
        response.device_lists.changed = updates.changed;
        response.device_lists.left = updates.left;
    }
    response.device_one_time_keys_count = one_time_keys;
    response.device_unused_fallback_key_types = Some(fallback_types);
    Ok(batch.next_position)
}

async fn compute(services: &Services, request: &SyncRequest, current: i64) -> Result<Response> {
    let store = &services.store;
    let since = request.since.unwrap_or(0);
    // Read before the rooms: a change after this is sent now and again next time, never lost.
    let typing_serial = services.typing.serial();
    let presence_serial = services.presence.serial();
    // Reads that do not depend on each other run concurrently, on as many read connections as
    // the store has: a long poll woken by a new message answers sooner.
    let user_id = &request.user_id;
    let (memberships, forgotten, account_data, ignored) = futures::try_join!(
        async { Ok::<_, crate::Error>(store.memberships_of(user_id).await?) },
        async { Ok::<_, crate::Error>(store.forgotten_rooms(user_id).await?) },
        async { Ok::<_, crate::Error>(store.account_data_since(user_id, since).await?) },
        services.users.ignored_users(user_id),
    )?;
    let forgotten: BTreeSet<OwnedRoomId> = forgotten.into_iter().collect();

    let (changed, receipts, counted) = futures::try_join!(
        changed_joined_rooms(services, request, &memberships, current),
        joined_receipts(services, request, &memberships, current),
        rooms_with_new_counts(services, request, &memberships, current),
    )?;
    let summaries =
        super::summary::room_summaries(services, request, &memberships, changed.as_ref()).await?;

    // Rooms are read concurrently: each takes a few small reads, and a user in many rooms would
    // otherwise wait for all of them one after the other. (The futures are collected first: a
    // stream that maps borrowed records is not provably `Send` to the compiler.)
    let updates: Vec<_> = memberships
        .iter()
        .filter(|m| request.filter.rooms.allows_room(m.room_id.as_str()))
        .map(|membership| {
            let extras = room_extras(services, request, membership, &account_data, &receipts)
                .map(|extras| extras.with_new_counts(counted.contains(&membership.room_id)))
                .map(|extras| extras.with_summary(summaries.get(&membership.room_id).cloned()));
            room_update(services, request, membership, current, &changed, &forgotten, extras)
        })
        .collect();
    let mut response = Response::new(String::new());
    let (pending, to_device_position, presence) = futures::try_join!(
        futures::stream::iter(updates).buffered(ROOM_CONCURRENCY).try_collect::<Vec<_>>(),
        add_encryption(services, request, current, &mut response),
        super::presence::presence_events(services, request, &memberships),
    )?;
    let pending: Vec<Option<PendingRoom>> = pending;
    response.next_batch = sync_token(current, typing_serial, to_device_position, presence_serial);
    response.presence.events = presence;
    finish_rooms(services, request, pending.into_iter().flatten().collect(), &mut response).await?;
    let mut global = GlobalAccountData::new();
    global.events = account_data
        .iter()
        .filter(|d| d.room_id.is_none() && request.filter.account_data.matches_type(&d.data_type))
        .map(|d| raw(&serde_json::json!({ "type": d.data_type, "content": d.content })))
        .collect::<Result<_>>()?;
    if let Some(rules) = default_push_rules(services, request, &account_data).await? {
        global.events.push(rules);
    }
    response.account_data = global;
    super::ignored::leave_out(&mut response, &request.user_id, &ignored, request.since.is_some());
    Ok(response)
}

/// For an initial sync of a user who never changed their push rules, the `m.push_rules` event
/// with the defaults they have, which is how a client learns them.
async fn default_push_rules(
    services: &Services,
    request: &SyncRequest,
    account_data: &[AccountDataRecord],
) -> Result<Option<Raw<ruma::events::AnyGlobalAccountDataEvent>>> {
    let stored = account_data.iter().any(|d| d.room_id.is_none() && d.data_type == PUSH_RULES);
    if request.since.is_some() || stored || !request.filter.account_data.matches_type(PUSH_RULES) {
        return Ok(None);
    }
    let rules = services.push.rules(&request.user_id).await?;
    let content = serde_json::json!({ "global": rules });
    Ok(Some(raw(&serde_json::json!({ "type": PUSH_RULES, "content": content }))?))
}

/// For an incremental sync, the joined rooms where the user's notification counts grew after
/// `since` (the evaluation of an event may come after the sync that sent the event).
async fn rooms_with_new_counts(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
    current: i64,
) -> Result<BTreeSet<OwnedRoomId>> {
    let Some(since) = request.since.filter(|_| !request.full_state) else {
        return Ok(BTreeSet::new());
    };
    let joined: Vec<OwnedRoomId> =
        memberships.iter().filter(|m| m.membership == "join").map(|m| m.room_id.clone()).collect();
    let store = &services.store;
    let rooms =
        store.rooms_with_new_notifications(&request.user_id, &joined, since, current).await?;
    Ok(rooms.into_iter().collect())
}

/// A joined room's unread notification counts: the room's total, or with
/// `unread_thread_notifications` the main timeline's and each thread's apart.
#[derive(Default)]
struct RoomCounts {
    notifications: u64,
    highlights: u64,
    threads: BTreeMap<ruma::OwnedEventId, UnreadNotificationsCount>,
}

/// The unread notification counts of the joined rooms shown, in one query for all of them.
async fn unread_counts(
    services: &Services,
    request: &SyncRequest,
    room_ids: &[OwnedRoomId],
) -> Result<BTreeMap<OwnedRoomId, RoomCounts>> {
    let mut by_room: BTreeMap<OwnedRoomId, RoomCounts> = BTreeMap::new();
    if room_ids.is_empty() {
        return Ok(by_room);
    }
    for count in services.store.notification_counts(&request.user_id, room_ids).await? {
        let room = by_room.entry(count.room_id.clone()).or_default();
        let thread_root = ruma::OwnedEventId::try_from(count.thread_id.as_str()).ok();
        match thread_root.filter(|_| request.filter.unread_thread_notifications) {
            Some(root) => {
                room.threads.insert(root, unread_count(count.notifications, count.highlights));
            }
            None => {
                room.notifications += count.notifications;
                room.highlights += count.highlights;
            }
        }
    }
    Ok(by_room)
}

fn unread_count(notifications: u64, highlights: u64) -> UnreadNotificationsCount {
    let mut count = UnreadNotificationsCount::new();
    count.notification_count = Some(UInt::try_from(notifications).unwrap_or(UInt::MAX));
    count.highlight_count = Some(UInt::try_from(highlights).unwrap_or(UInt::MAX));
    count
}

/// For an incremental sync, the joined rooms with events after `since`: the others have nothing
/// to say but their account data, and are not read at all. `None` when every room is read.
async fn changed_joined_rooms(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
    current: i64,
) -> Result<Option<BTreeSet<OwnedRoomId>>> {
    let Some(since) = request.since.filter(|_| !request.full_state) else {
        return Ok(None);
    };
    let joined: Vec<OwnedRoomId> =
        memberships.iter().filter(|m| m.membership == "join").map(|m| m.room_id.clone()).collect();
    let changed = services.store.rooms_changed(&joined, since, current).await?;
    Ok(Some(changed.into_iter().collect()))
}

/// How many rooms one sync reads at the same time.
const ROOM_CONCURRENCY: usize = 8;

/// One room's section of the response as read, its events not yet formatted: the events of
/// all rooms are formatted together (see [`finish_rooms`]).
enum PendingRoom {
    Join(OwnedRoomId, RoomRecords, RoomExtras),
    Invite(OwnedRoomId, InvitedRoom),
    Leave(OwnedRoomId, RoomRecords),
    Knock(OwnedRoomId, KnockedRoom),
}

impl PendingRoom {
    fn records_mut(&mut self) -> Option<&mut RoomRecords> {
        match self {
            Self::Join(_, records, _) | Self::Leave(_, records) => Some(records),
            Self::Invite(..) | Self::Knock(..) => None,
        }
    }
}

/// The room's account data that the filter lets through.
fn room_account_data(
    request: &SyncRequest,
    account_data: &[AccountDataRecord],
    room_id: &OwnedRoomId,
) -> Result<Vec<Raw<ruma::events::AnyRoomAccountDataEvent>>> {
    account_data
        .iter()
        .filter(|d| d.room_id.as_ref() == Some(room_id))
        .filter(|d| request.filter.room_account_data.matches_type(&d.data_type))
        .map(|d| raw(&serde_json::json!({ "type": d.data_type, "content": d.content })))
        .collect()
}

/// What a room contributes to the response, if anything.
async fn room_update(
    services: &Services,
    request: &SyncRequest,
    membership: &MembershipRecord,
    current: i64,
    changed: &Option<BTreeSet<OwnedRoomId>>,
    forgotten: &BTreeSet<OwnedRoomId>,
    extras: Result<RoomExtras>,
) -> Result<Option<PendingRoom>> {
    let room_id = membership.room_id.clone();
    Ok(match membership.membership.as_str() {
        "join" => {
            let extras = extras?;
            let unchanged = changed.as_ref().is_some_and(|c| !c.contains(&membership.room_id));
            if unchanged && extras.is_empty() {
                return Ok(None);
            }
            joined_room(services, request, membership, current, &extras)
                .await?
                .map(|records| PendingRoom::Join(room_id, records, extras))
        }
        "invite" if request.since.is_none_or(|s| membership.stream_position > s) => {
            Some(PendingRoom::Invite(room_id, invited_room(services, membership).await?))
        }
        "knock" if request.since.is_none_or(|s| membership.stream_position > s) => {
            let mut state = KnockState::new();
            state.events = stripped_room_state(services, membership).await?;
            Some(PendingRoom::Knock(room_id, KnockedRoom::from(state)))
        }
        "leave" | "ban" if wants_left_room(request, membership, forgotten) => {
            Some(PendingRoom::Leave(room_id, left_room(services, request, membership).await?))
        }
        _ => None,
    })
}

fn wants_left_room(
    request: &SyncRequest,
    membership: &MembershipRecord,
    forgotten: &BTreeSet<OwnedRoomId>,
) -> bool {
    if forgotten.contains(&membership.room_id) {
        return false;
    }
    match request.since {
        Some(since) => membership.stream_position > since,
        None => request.filter.include_leave,
    }
}

/// What a joined room shows beside its timeline and state.
struct RoomExtras {
    account_data: Vec<Raw<ruma::events::AnyRoomAccountDataEvent>>,
    ephemeral: Vec<Raw<AnySyncEphemeralRoomEvent>>,
    /// Whether the user's notification counts in the room grew after the token.
    new_counts: bool,
    /// The room's summary, when the sync is to show it.
    summary: Option<super::summary::ShownSummary>,
}

impl RoomExtras {
    fn is_empty(&self) -> bool {
        self.account_data.is_empty() && self.ephemeral.is_empty() && !self.new_counts
    }

    fn with_new_counts(self, new_counts: bool) -> Self {
        Self { new_counts, ..self }
    }

    fn with_summary(self, summary: Option<super::summary::ShownSummary>) -> Self {
        Self { summary, ..self }
    }
}

/// The account data and ephemeral events a joined room shows.
fn room_extras(
    services: &Services,
    request: &SyncRequest,
    membership: &MembershipRecord,
    account_data: &[AccountDataRecord],
    receipts: &BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>,
) -> Result<RoomExtras> {
    let mut ephemeral = typing(services, request, membership)?;
    let room_receipts: Vec<&ReceiptRecord> =
        receipts.get(&membership.room_id).map(|r| r.iter().collect()).unwrap_or_default();
    if request.filter.ephemeral.matches_type("m.receipt")
        && request.filter.ephemeral.allows_room(membership.room_id.as_str())
        && let Some(content) = receipt_content(&room_receipts, &request.user_id)
    {
        ephemeral.push(raw(&serde_json::json!({ "type": "m.receipt", "content": content }))?);
    }
    if let Some(limit) = request.filter.ephemeral.limit {
        ephemeral.truncate(limit);
    }
    Ok(RoomExtras {
        account_data: room_account_data(request, account_data, &membership.room_id)?,
        ephemeral,
        new_counts: false,
        summary: None,
    })
}

/// The receipts each joined room is to show: those that changed after the token, or all of
/// them for a room new to the sync.
async fn joined_receipts(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
    current: i64,
) -> Result<BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>> {
    let since = request.since.filter(|_| !request.full_state);
    let (mut whole, mut changed) = (Vec::new(), Vec::new());
    for membership in memberships.iter().filter(|m| m.membership == "join") {
        match since {
            Some(since) if membership.stream_position <= since => {
                changed.push(membership.room_id.clone());
            }
            _ => whole.push(membership.room_id.clone()),
        }
    }
    let store = &services.store;
    let mut receipts = store.receipts(&whole, 0, current).await?;
    if let Some(since) = since.filter(|_| !changed.is_empty()) {
        receipts.extend(store.receipts(&changed, since, current).await?);
    }
    let mut by_room: BTreeMap<OwnedRoomId, Vec<ReceiptRecord>> = BTreeMap::new();
    for receipt in receipts {
        by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
    }
    Ok(by_room)
}

/// The room's `m.typing` event, if the sync is to show it: when who types changed after the
/// token's typing serial, or, for a room new to the sync (or a token without a serial), when
/// anyone types.
fn typing(
    services: &Services,
    request: &SyncRequest,
    membership: &MembershipRecord,
) -> Result<Vec<Raw<AnySyncEphemeralRoomEvent>>> {
    if !request.filter.ephemeral.matches_type("m.typing")
        || !request.filter.ephemeral.allows_room(membership.room_id.as_str())
    {
        return Ok(Vec::new());
    }
    let newly_joined = request.since.is_none_or(|since| membership.stream_position > since);
    let since = request.since_typing.filter(|_| !newly_joined && !request.full_state);
    let Some(user_ids) = services.typing.changed_since(&membership.room_id, since) else {
        return Ok(Vec::new());
    };
    let event = serde_json::json!({ "type": "m.typing", "content": { "user_ids": user_ids } });
    Ok(vec![raw(&event)?])
}

/// A joined room's events, or `None` if nothing in it changed.
async fn joined_room(
    services: &Services,
    request: &SyncRequest,
    membership: &MembershipRecord,
    current: i64,
    extras: &RoomExtras,
) -> Result<Option<RoomRecords>> {
    let newly_joined = request.since.is_none_or(|since| membership.stream_position > since);
    let full = newly_joined || request.full_state;
    let since = if newly_joined { None } else { request.since };

    let heroes = extras.summary.as_ref().map(|s| s.heroes.as_slice()).unwrap_or_default();
    let records =
        room_records(services, request, &membership.room_id, since, current, full, heroes).await?;
    let unchanged = records.timeline.is_empty() && records.state.is_empty();
    Ok((full || !unchanged || !extras.is_empty()).then_some(records))
}

async fn left_room(
    services: &Services,
    request: &SyncRequest,
    membership: &MembershipRecord,
) -> Result<RoomRecords> {
    // The user sees the room up to and including their leave.
    room_records(
        services,
        request,
        &membership.room_id,
        request.since,
        membership.stream_position,
        request.since.is_none() || request.full_state,
        &[],
    )
    .await
}

/// Formats the events of every room in one batch (a few queries for all the rooms together
/// rather than a few for each), reads the joined rooms' unread counts in one query, and puts
/// the rooms into the response.
async fn finish_rooms(
    services: &Services,
    request: &SyncRequest,
    mut pending: Vec<PendingRoom>,
    response: &mut Response,
) -> Result<()> {
    let mut records = Vec::new();
    let spans: Vec<(usize, usize)> = pending
        .iter_mut()
        .map(|room| match room.records_mut() {
            Some(room) => {
                let span = (room.timeline.len(), room.state.len());
                records.append(&mut room.timeline);
                records.append(&mut room.state);
                span
            }
            None => (0, 0),
        })
        .collect();
    let viewer = Viewer { user_id: &request.user_id, device_id: &request.device_id };
    let mut formatted = client_events(&services.store, viewer, &records, Format::Sync).await?;
    let mut formatted = formatted.drain(..);
    let joined: Vec<OwnedRoomId> = pending
        .iter()
        .filter_map(|room| match room {
            PendingRoom::Join(room_id, ..) => Some(room_id.clone()),
            _ => None,
        })
        .collect();
    let mut counts = unread_counts(services, request, &joined).await?;

    for (room, (timeline_len, state_len)) in pending.into_iter().zip(spans) {
        match room {
            PendingRoom::Join(room_id, records, extras) => {
                let (timeline, state) =
                    take_events(&mut formatted, &records, timeline_len, state_len)?;
                let counts = counts.remove(&room_id).unwrap_or_default();
                let room = joined_section(timeline, state, extras, counts);
                response.rooms.join.insert(room_id, room);
            }
            PendingRoom::Invite(room_id, room) => {
                response.rooms.invite.insert(room_id, room);
            }
            PendingRoom::Knock(room_id, room) => {
                response.rooms.knock.insert(room_id, room);
            }
            PendingRoom::Leave(room_id, records) => {
                let (timeline, state) =
                    take_events(&mut formatted, &records, timeline_len, state_len)?;
                let mut room = LeftRoom::new();
                room.timeline = timeline;
                room.state = State::Before(state);
                response.rooms.leave.insert(room_id, room);
            }
        }
    }
    Ok(())
}

/// A room's formatted timeline and state: the next `timeline_len` and `state_len` events.
fn take_events(
    formatted: &mut impl Iterator<Item = JsonValue>,
    records: &RoomRecords,
    timeline_len: usize,
    state_len: usize,
) -> Result<(Timeline, StateEvents)> {
    let mut timeline = Timeline::new();
    timeline.limited = records.limited;
    timeline.prev_batch = Some(token(records.start));
    timeline.events =
        formatted.by_ref().take(timeline_len).map(|e| raw(&e)).collect::<Result<_>>()?;
    let state: Vec<_> =
        formatted.by_ref().take(state_len).map(|e| raw(&e)).collect::<Result<_>>()?;
    Ok((timeline, StateEvents::from(state)))
}

fn joined_section(
    timeline: Timeline,
    state: StateEvents,
    extras: RoomExtras,
    counts: RoomCounts,
) -> JoinedRoom {
    let mut room = JoinedRoom::new();
    room.summary = extras.summary.map(|s| s.summary).unwrap_or_default();
    room.timeline = timeline;
    room.state = State::Before(state);
    let mut room_data = RoomAccountData::new();
    room_data.events = extras.account_data;
    room.account_data = room_data;
    let mut ephemeral = Ephemeral::new();
    ephemeral.events = extras.ephemeral;
    room.ephemeral = ephemeral;
    room.unread_notifications = unread_count(counts.notifications, counts.highlights);
    room.unread_thread_notifications = counts.threads;
    room
}

async fn invited_room(services: &Services, membership: &MembershipRecord) -> Result<InvitedRoom> {
    Ok(InvitedRoom::from(InviteState::from(stripped_room_state(services, membership).await?)))
}

/// The stripped state an invited or knocking user sees: a few state events of the room and the
/// user's own membership event (also sliding sync's `invite_state`).
pub(super) async fn stripped_room_state(
    services: &Services,
    membership: &MembershipRecord,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let store = &services.store;
    let mut events = Vec::new();
    for event_type in INVITE_STATE_TYPES {
        if let Some(event) = store.current_state_event(&membership.room_id, event_type, "").await? {
            events.push(raw(&stripped_state(&event))?);
        }
    }
    if let Some(invite) = store.event(&membership.event_id).await? {
        events.push(raw(&stripped_state(&invite))?);
    }
    Ok(events)
}

/// A room's timeline (the last `limit` events of a range) and the state before it, as stored.
struct RoomRecords {
    timeline: Vec<EventRecord>,
    state: Vec<EventRecord>,
    limited: bool,
    /// The position just before the timeline: its `prev_batch`.
    start: i64,
}

/// The timeline of `(since, upto]` (its last `limit` events) and the state before it; when
/// lazy-loading members, the state keeps the members of `heroes` too.
async fn room_records(
    services: &Services,
    request: &SyncRequest,
    room_id: &ruma::RoomId,
    since: Option<i64>,
    upto: i64,
    full_state: bool,
    heroes: &[OwnedUserId],
) -> Result<RoomRecords> {
    let store = &services.store;
    let limit = request.filter.timeline_limit();
    let view = HistoryView::load(store, room_id, &request.user_id).await?;
    let query =
        request.filter.timeline.query(room_id, upto + 1, since, Direction::Backward, limit + 1);
    let mut events = store.room_events(query).await?;
    let limited = events.len() > limit;
    events.truncate(limit);
    events.reverse();
    let start = events.first().map_or(upto, |e| e.stream_position - 1);
    events.retain(|event| view.allows(event));

    let state = if full_state {
        store.state_at(room_id, start).await?
    } else if limited {
        store.state_changes(room_id, since.unwrap_or(0), start).await?
    } else {
        Vec::new()
    };
    let state = filter_state(state, &events, &request.filter, &request.user_id, heroes);
    Ok(RoomRecords { timeline: events, state, limited, start })
}

/// Applies the state filter and, when lazy-loading, keeps only the members the timeline needs.
fn filter_state(
    state: Vec<EventRecord>,
    timeline: &[EventRecord],
    filter: &SyncFilter,
    user_id: &UserId,
    heroes: &[OwnedUserId],
) -> Vec<EventRecord> {
    let senders: BTreeSet<&str> = timeline
        .iter()
        .map(|e| e.sender.as_str())
        .chain([user_id.as_str()])
        .chain(heroes.iter().map(|hero| hero.as_str()))
        .collect();
    let in_timeline: BTreeSet<&str> = timeline.iter().map(|e| e.event_id.as_str()).collect();
    state
        .into_iter()
        .filter(|event| filter.state.matches(event))
        .filter(|event| !in_timeline.contains(event.event_id.as_str()))
        .filter(|event| {
            !filter.state.lazy_load_members
                || event.event_type != "m.room.member"
                || event.state_key.as_deref().is_some_and(|key| senders.contains(key))
        })
        .collect()
}

pub(super) fn raw<T>(value: &JsonValue) -> Result<Raw<T>> {
    let json = serde_json::value::to_raw_value(value).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Raw::from_json(json))
}

impl super::EventFilter {
    /// Whether a type passes the type lists (account data has no sender).
    pub fn matches_type(&self, data_type: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.iter().any(|p| super::filter::glob(p, data_type)))
            && !self.not_types.iter().any(|p| super::filter::glob(p, data_type))
    }
}
