//! Typing notifications, read receipts and the fully read marker between two `matrix-sdk`
//! clients sharing a room on the real `hearth` binary (named by `HEARTH_BIN`):
//!
//! 1. bob types and stops; alice's typing subscription (fed by `m.typing` in `/sync`) shows him
//!    typing, then nobody;
//! 2. bob sends a public read receipt and a private one; alice's store gets the public one only,
//!    bob's own store gets both; a receipt for an older event does not move his public receipt
//!    back;
//! 3. bob moves his fully read marker with `/receipt/m.fully_read` and then `/read_markers`; his
//!    room account data follows, and a new login of bob finds the marker and his private receipt
//!    in its initial sync.
//!
//! A "barrier" message sent after a receipt tells when a sync has delivered everything before it:
//! receipts and messages share one stream, so once alice sees the barrier she would also have
//! seen a leaked private receipt.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use hearth_sdk_tests::{
    client::{
        invite_and_join, login, own_user_id, register, room_of, send_text, sync_once, sync_until,
        sync_until_stored, synced_bodies,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::{
    Client, Room,
    room::Receipts,
    ruma::{
        EventId, OwnedEventId, OwnedUserId, RoomId, UserId,
        api::client::receipt::create_receipt::v3::ReceiptType as SentReceiptType,
        events::{
            fully_read::FullyReadEventContent,
            receipt::{ReceiptThread, ReceiptType},
        },
    },
};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const ROOM_NAME: &str = "hearth sdk ephemeral";
const SECOND_BODY: &str = "and this, quietly";

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn typing_receipts_and_read_markers_reach_the_right_users() -> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let bob = login(server.url(), BOB).await?;
    let room_id = invite_and_join(&alice, &bob, ROOM_NAME, SYNC_DEADLINE).await?;

    typing_starts_and_stops(&alice, &bob, &room_id).await?;
    let read = receipts_public_and_private(&alice, &bob, &room_id).await?;
    fully_read_marker_moves(&bob, &room_id, &read).await?;
    new_login_finds_private_state(server.url(), &room_id, &read).await
}

/// Syncs alice until her typing subscription's latest list is `expected`.
async fn alice_sees_typing(
    alice: &Client,
    typing: &mut tokio::sync::broadcast::Receiver<Vec<OwnedUserId>>,
    expected: &[OwnedUserId],
    what: &str,
) -> anyhow::Result<()> {
    let mut latest: Option<Vec<OwnedUserId>> = None;
    sync_until(alice, SYNC_DEADLINE, what, |_| {
        while let Ok(user_ids) = typing.try_recv() {
            latest = Some(user_ids);
        }
        latest.as_deref() == Some(expected)
    })
    .await
    .with_context(|| format!("alice's latest typing list: {latest:?}"))
}

/// Bob types, and alice sees him typing; he stops, and she sees that nobody types.
async fn typing_starts_and_stops(
    alice: &Client,
    bob: &Client,
    room_id: &RoomId,
) -> anyhow::Result<()> {
    let (_handler, mut typing) = room_of(alice, room_id)?.subscribe_to_typing_notifications();
    let bob_room = room_of(bob, room_id)?;
    let typing_path =
        format!("PUT /_matrix/client/v3/rooms/{room_id}/typing/{}", bob_room.own_user_id());

    bob_room.typing_notice(true).await.with_context(|| format!("{typing_path} (typing)"))?;
    alice_sees_typing(alice, &mut typing, &[own_user_id(bob)?], "bob typing").await?;

    bob_room.typing_notice(false).await.with_context(|| format!("{typing_path} (stopped)"))?;
    alice_sees_typing(alice, &mut typing, &[], "bob no longer typing").await
}

/// The events bob's receipts and markers point at, oldest first.
struct ReadEvents {
    first: OwnedEventId,
    second: OwnedEventId,
}

/// Sends a receipt of `receipt_type` (unthreaded) for `event_id`.
async fn send_receipt(
    room: &Room,
    receipt_type: SentReceiptType,
    event_id: &EventId,
) -> anyhow::Result<()> {
    let path = format!(
        "POST /_matrix/client/v3/rooms/{}/receipt/{receipt_type}/{event_id}",
        room.room_id()
    );
    room.send_single_receipt(receipt_type, ReceiptThread::Unthreaded, event_id.to_owned())
        .await
        .context(path)
}

/// The event of `user_id`'s unthreaded receipt of `receipt_type` in the client's store.
async fn stored_receipt(
    room: &Room,
    receipt_type: ReceiptType,
    user_id: &UserId,
) -> anyhow::Result<Option<OwnedEventId>> {
    let receipt = room
        .load_user_receipt(receipt_type.clone(), ReceiptThread::Unthreaded, user_id)
        .await
        .with_context(|| format!("cannot load {user_id}'s {receipt_type} receipt"))?;
    Ok(receipt.map(|(event_id, _)| event_id))
}

/// Bob sends a message after everything before it, and syncs `client` until it shows.
async fn barrier(client: &Client, bob_room: &Room, body: &str) -> anyhow::Result<()> {
    send_text(bob_room, body).await?;
    let room_id = bob_room.room_id();
    sync_until(client, SYNC_DEADLINE, body, |r| synced_bodies(r, room_id).iter().any(|b| b == body))
        .await
}

/// Bob reads alice's first message publicly and her second privately: alice sees the first only;
/// bob sees both. A later public receipt moves forward, an older one is ignored.
async fn receipts_public_and_private(
    alice: &Client,
    bob: &Client,
    room_id: &RoomId,
) -> anyhow::Result<ReadEvents> {
    let (alice_room, bob_room) = (room_of(alice, room_id)?, room_of(bob, room_id)?);
    let bob_id = own_user_id(bob)?;
    let read = ReadEvents {
        first: send_text(&alice_room, "read this").await?,
        second: send_text(&alice_room, SECOND_BODY).await?,
    };
    sync_until(bob, SYNC_DEADLINE, "alice's messages", |r| {
        synced_bodies(r, room_id).iter().any(|body| body == SECOND_BODY)
    })
    .await?;

    send_receipt(&bob_room, SentReceiptType::Read, &read.first).await?;
    send_receipt(&bob_room, SentReceiptType::ReadPrivate, &read.second).await?;
    barrier(alice, &bob_room, "after bob's first receipts").await?;
    let public = stored_receipt(&alice_room, ReceiptType::Read, &bob_id).await?;
    ensure!(public.as_ref() == Some(&read.first), "alice sees bob's m.read at {public:?}");
    let private = stored_receipt(&alice_room, ReceiptType::ReadPrivate, &bob_id).await?;
    ensure!(private.is_none(), "alice sees bob's m.read.private at {private:?}");
    let readers = alice_room
        .load_event_receipts(ReceiptType::Read, ReceiptThread::Unthreaded, &read.second)
        .await?;
    ensure!(
        readers.is_empty(),
        "alice sees public receipts on the privately read event: {readers:?}"
    );

    sync_until_stored(bob, SYNC_DEADLINE, "bob's own private receipt", async || {
        Ok(stored_receipt(&bob_room, ReceiptType::ReadPrivate, &bob_id).await?.as_ref()
            == Some(&read.second))
    })
    .await?;

    send_receipt(&bob_room, SentReceiptType::Read, &read.second).await?;
    send_receipt(&bob_room, SentReceiptType::Read, &read.first).await?;
    barrier(alice, &bob_room, "after bob's later receipts").await?;
    let public = stored_receipt(&alice_room, ReceiptType::Read, &bob_id).await?;
    ensure!(
        public.as_ref() == Some(&read.second),
        "after an older receipt, bob's m.read is at {public:?}"
    );
    let readers = alice_room
        .load_event_receipts(ReceiptType::Read, ReceiptThread::Unthreaded, &read.second)
        .await?;
    ensure!(
        readers.iter().map(|(user_id, _)| user_id).eq([&bob_id]),
        "public readers of the second message: {readers:?}"
    );
    Ok(read)
}

/// The event of the user's fully read marker (`m.fully_read` room account data) in the store.
async fn stored_fully_read(room: &Room) -> anyhow::Result<Option<OwnedEventId>> {
    let Some(raw) = room.account_data_static::<FullyReadEventContent>().await? else {
        return Ok(None);
    };
    Ok(Some(raw.deserialize().context("m.fully_read does not parse")?.content.event_id))
}

/// Bob sets his fully read marker through `/receipt/m.fully_read`, then through `/read_markers`;
/// his sync shows each.
async fn fully_read_marker_moves(
    bob: &Client,
    room_id: &RoomId,
    read: &ReadEvents,
) -> anyhow::Result<()> {
    let room = room_of(bob, room_id)?;
    send_receipt(&room, SentReceiptType::FullyRead, &read.first).await?;
    sync_until_stored(
        bob,
        SYNC_DEADLINE,
        "the fully read marker on the first message",
        async || Ok(stored_fully_read(&room).await?.as_ref() == Some(&read.first)),
    )
    .await?;

    room.send_multiple_receipts(Receipts::new().fully_read_marker(read.second.clone()))
        .await
        .with_context(|| format!("POST /_matrix/client/v3/rooms/{room_id}/read_markers"))?;
    sync_until_stored(
        bob,
        SYNC_DEADLINE,
        "the fully read marker on the second message",
        async || Ok(stored_fully_read(&room).await?.as_ref() == Some(&read.second)),
    )
    .await
}

/// A new login of bob finds his fully read marker and his private receipt in its first sync.
async fn new_login_finds_private_state(
    url: &str,
    room_id: &RoomId,
    read: &ReadEvents,
) -> anyhow::Result<()> {
    let bob = login(url, BOB).await?;
    sync_once(&bob).await?;
    let room = room_of(&bob, room_id)?;
    let fully_read = stored_fully_read(&room).await?;
    ensure!(fully_read.as_ref() == Some(&read.second), "fully read marker: {fully_read:?}");
    let private = stored_receipt(&room, ReceiptType::ReadPrivate, &own_user_id(&bob)?).await?;
    ensure!(private.as_ref() == Some(&read.second), "private receipt: {private:?}");
    Ok(())
}
