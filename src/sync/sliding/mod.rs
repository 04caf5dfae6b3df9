//! Simplified sliding sync ([MSC4186]): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! A request names lists of the user's rooms (filtered, ordered by recency, cut by ranges) and
//! room subscriptions; the answer counts each list and sends the selected rooms that are new to
//! the connection or changed since its previous answer (see [`room`]), with the extensions asked
//! for (see [`extensions`]). What a connection was sent lives in memory (see [`connection`]);
//! nothing is stored. When a request with `pos` finds nothing new, it waits up to `timeout` for
//! the notifier, as `/sync` does.
//!
//! What ignored users sent is left out as `/sync` leaves it out (see [`super::ignored`]): their
//! timeline events other than state, and their invites.
//!
//! Not served (yet): the `spaces`, `tags` and `not_tags` list filters ruma's request type has no
//! field for, presence, and the extensions of other MSCs (thread subscriptions, profiles).
//!
//! [MSC4186]: https://github.com/matrix-org/matrix-spec-proposals/pull/4186

mod connection;
mod extensions;
mod lists;
mod room;
mod summary;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use ruma::{
    OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::sync::sync_events::v5::{Request, Response, response},
};

pub use self::connection::Connections;
use self::{
    connection::{ConnectionKey, SentRoom, Snapshot},
    lists::Selection,
    room::{Asker, Changes, room_entry},
    summary::RoomSummary,
};
use crate::{Result, services::Services, store::ReceiptRecord};

/// The longest a request waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// How many rooms one answer reads at the same time.
const ROOM_CONCURRENCY: usize = 8;

/// Answers a sliding sync request of a user's device, waiting for news if there is none.
pub async fn sliding_sync(
    services: &Services,
    user_id: OwnedUserId,
    device_id: String,
    request: Request,
) -> Result<Response> {
    lists::check(&request)?;
    let key =
        ConnectionKey { user_id, device_id, conn_id: request.conn_id.clone().unwrap_or_default() };
    let previous = services.sliding_sync.begin(&key, request.pos.as_deref())?;
    let mut wake = services.notifier.watch(&key.user_id);
    let timeout = request.timeout.unwrap_or(Duration::ZERO).min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ignored = services.users.ignored_users(&key.user_id).await?;
        let asker = Asker {
            user_id: &key.user_id,
            device_id: &key.device_id,
            current: crate::sync::current_position(services).await?,
            ignored: &ignored,
        };
        let answer = compute(services, asker, &request, previous.as_deref()).await?;
        let may_wait = previous.is_some() && !answer.news;
        let waited_enough = tokio::time::Instant::now() >= deadline;
        if !may_wait
            || waited_enough
            || tokio::time::timeout_at(deadline, wake.changed()).await.is_err()
        {
            let mut response = answer.response;
            response.pos = services.sliding_sync.commit(&key, answer.snapshot);
            return Ok(response);
        }
    }
}

/// One computed answer, before it gets its `pos`.
struct Answer {
    response: Response,
    snapshot: Snapshot,
    /// Whether it tells the client anything it did not know.
    news: bool,
}

async fn compute(
    services: &Services,
    asker: Asker<'_>,
    request: &Request,
    previous: Option<&Snapshot>,
) -> Result<Answer> {
    // Read before anything else: a change after this is sent now and again next time.
    let typing_serial = services.typing.serial();
    let summaries = room_summaries(services, asker, previous).await?;
    let selection = lists::select(request, &summaries);
    let receipts = selected_receipts(services, asker, previous, &selection).await?;
    let recounted = rooms_with_new_counts(services, asker, previous, &selection, &receipts).await?;
    let entries =
        room_entries(services, asker, &summaries, &selection, previous, &recounted).await?;

    let mut snapshot = Snapshot {
        position: asker.current,
        typing: typing_serial,
        rooms: previous.map(|p| p.rooms.clone()).unwrap_or_default(),
        list_counts: selection.counts.clone(),
    };
    let mut response = Response::new(String::new());
    response.txn_id = request.txn_id.clone();
    for (room_id, (room, held)) in entries {
        snapshot.rooms.insert(room_id.clone(), held);
        if let Some(room) = room {
            response.rooms.insert(room_id, room);
        }
    }
    response.lists = selection
        .counts
        .iter()
        .map(|(name, count)| {
            let mut list = response::List::default();
            list.count = UInt::try_from(*count).unwrap_or(UInt::MAX);
            (name.clone(), list)
        })
        .collect();
    response.extensions =
        extensions_of(services, asker, request, previous, &selection, &receipts).await?;
    let news = has_news(&response, previous, &selection);
    Ok(Answer { response, snapshot, news })
}

/// The entry of every selected room (or `None` for one with nothing new) and what the
/// connection then holds of it. Rooms are read concurrently: each takes a few small reads.
async fn room_entries(
    services: &Services,
    asker: Asker<'_>,
    summaries: &[RoomSummary],
    selection: &Selection,
    previous: Option<&Snapshot>,
    recounted: &BTreeSet<OwnedRoomId>,
) -> Result<Vec<(OwnedRoomId, (Option<response::Room>, SentRoom))>> {
    let by_id: BTreeMap<&OwnedRoomId, &RoomSummary> =
        summaries.iter().map(|s| (s.room_id(), s)).collect();
    let entries: Vec<_> = selection
        .rooms
        .iter()
        .filter_map(|(room_id, config)| Some((by_id.get(room_id).copied()?, config)))
        .map(|(summary, config)| async move {
            let sent = previous.and_then(|p| p.rooms.get(summary.room_id()));
            let changes = Changes { counts: recounted.contains(summary.room_id()) };
            let entry = room_entry(services, asker, summary, config, sent, changes).await?;
            Ok::<_, crate::Error>((summary.room_id().clone(), entry))
        })
        .collect();
    futures::stream::iter(entries).buffered(ROOM_CONCURRENCY).try_collect().await
}

async fn extensions_of(
    services: &Services,
    asker: Asker<'_>,
    request: &Request,
    previous: Option<&Snapshot>,
    selection: &Selection,
    receipts: &BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>,
) -> Result<response::Extensions> {
    let asked = &request.extensions;
    let mut shown = response::Extensions::default();
    shown.to_device = extensions::to_device(services, asker, &asked.to_device).await?;
    shown.e2ee = extensions::e2ee(services, asker, &asked.e2ee, previous).await?;
    shown.account_data =
        extensions::account_data(services, asker, &asked.account_data, previous, selection).await?;
    shown.receipts = extensions::receipts(asker, &asked.receipts, selection, receipts)?;
    shown.typing = extensions::typing(services, &asked.typing, previous, selection)?;
    Ok(shown)
}

/// Whether an answer says anything new: a room, a list count that changed, or news from an
/// extension (key counts alone are not news: they are sent every time).
fn has_news(response: &Response, previous: Option<&Snapshot>, selection: &Selection) -> bool {
    let extensions = &response.extensions;
    let counts_changed = previous.is_none_or(|p| p.list_counts != selection.counts);
    !response.rooms.is_empty()
        || counts_changed
        || extensions.to_device.as_ref().is_some_and(|t| !t.events.is_empty())
        || !extensions.e2ee.device_lists.is_empty()
        || !extensions.account_data.is_empty()
        || !extensions.receipts.is_empty()
        || !extensions.typing.is_empty()
}

/// The rooms the lists choose from: those the user is joined to, invited to or knocking on, and
/// those they left (or were banned from) since the previous answer, which are sent once more so
/// the client sees the leave.
async fn room_summaries(
    services: &Services,
    asker: Asker<'_>,
    previous: Option<&Snapshot>,
) -> Result<Vec<RoomSummary>> {
    let store = &services.store;
    let memberships = store.memberships_of(asker.user_id).await?;
    let forgotten: BTreeSet<OwnedRoomId> =
        store.forgotten_rooms(asker.user_id).await?.into_iter().collect();
    let direct = direct_rooms(services, asker.user_id).await?;
    let wanted = memberships.into_iter().filter(|m| match m.membership.as_str() {
        "join" | "invite" | "knock" => true,
        "leave" | "ban" => previous
            .is_some_and(|p| p.rooms.contains_key(&m.room_id) && m.stream_position > p.position),
        _ => false,
    });
    let loads: Vec<_> = wanted
        .filter(|m| !forgotten.contains(&m.room_id))
        .map(|m| RoomSummary::load(store, m, &direct, asker.current))
        .collect();
    let mut summaries: Vec<RoomSummary> =
        futures::stream::iter(loads).buffered(ROOM_CONCURRENCY).try_collect().await?;
    summaries.retain(|s| s.inviter().is_none_or(|inviter| !asker.ignored.contains(inviter)));
    Ok(summaries)
}

/// The rooms the user's `m.direct` account data names as direct chats.
async fn direct_rooms(services: &Services, user_id: &UserId) -> Result<BTreeSet<OwnedRoomId>> {
    let Some(content) = services.store.account_data(user_id, None, "m.direct").await? else {
        return Ok(BTreeSet::new());
    };
    let by_user: BTreeMap<String, Vec<String>> =
        serde_json::from_str(content.get()).unwrap_or_default();
    Ok(by_user.into_values().flatten().filter_map(|r| OwnedRoomId::try_from(r).ok()).collect())
}

/// The read receipts of the selected joined rooms that the client has not seen: since each
/// room was sent, or all of them for a room new to the connection.
async fn selected_receipts(
    services: &Services,
    asker: Asker<'_>,
    previous: Option<&Snapshot>,
    selection: &Selection,
) -> Result<BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>> {
    let (mut sent, mut new) = (Vec::new(), Vec::new());
    for room_id in selection.rooms.keys().filter(|r| selection.joined.contains(*r)) {
        match previous.and_then(|p| p.rooms.get(room_id)) {
            Some(_) => sent.push(room_id.clone()),
            None => new.push(room_id.clone()),
        }
    }
    let store = &services.store;
    let mut receipts = Vec::new();
    if !new.is_empty() {
        receipts.extend(store.receipts(&new, 0, asker.current).await?);
    }
    if let Some(previous) = previous.filter(|_| !sent.is_empty()) {
        let since = sent.iter().filter_map(|r| previous.rooms.get(r)).map(|s| s.position).min();
        let records = store.receipts(&sent, since.unwrap_or(0), asker.current).await?;
        let seen = |r: &ReceiptRecord| previous.rooms.get(&r.room_id).map_or(0, |s| s.position);
        receipts.extend(records.into_iter().filter(|r| r.stream_position > seen(r)));
    }
    let mut by_room: BTreeMap<OwnedRoomId, Vec<ReceiptRecord>> = BTreeMap::new();
    for receipt in receipts {
        by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
    }
    Ok(by_room)
}

/// The selected rooms sent before whose unread counts may have changed since: new
/// notifications were recorded, or the user's own read receipt moved.
async fn rooms_with_new_counts(
    services: &Services,
    asker: Asker<'_>,
    previous: Option<&Snapshot>,
    selection: &Selection,
    receipts: &BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>,
) -> Result<BTreeSet<OwnedRoomId>> {
    let Some(previous) = previous else { return Ok(BTreeSet::new()) };
    let sent: Vec<OwnedRoomId> =
        selection.rooms.keys().filter(|r| previous.rooms.contains_key(*r)).cloned().collect();
    if sent.is_empty() {
        return Ok(BTreeSet::new());
    }
    let store = &services.store;
    let since = sent.iter().filter_map(|r| previous.rooms.get(r)).map(|s| s.position).min();
    let notified = store
        .rooms_with_new_notifications(asker.user_id, &sent, since.unwrap_or(0), asker.current)
        .await?;
    let mut changed: BTreeSet<OwnedRoomId> = notified.into_iter().collect();
    for room_id in &sent {
        let own = receipts.get(room_id).into_iter().flatten().any(|r| r.user_id == asker.user_id);
        if own {
            changed.insert(room_id.clone());
        }
    }
    Ok(changed)
}
