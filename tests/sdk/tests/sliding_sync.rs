//! Simplified sliding sync (MSC4186) as `matrix-sdk` drives it, the way Element X does, against
//! the real `hearth` binary (named by `HEARTH_BIN`):
//!
//! 1. alice makes three rooms and writes in each; a new login of hers finds sliding sync through
//!    `/versions`;
//! 2. its room list (growing two rooms at a time, as Element X's grows) lists the three rooms,
//!    with their names and latest messages, on a fresh client that knows nothing else;
//! 3. a message her first client sends then arrives live through the same connection;
//! 4. bob, on sliding sync alone, gets alice's invite to a room she encrypts, joins it, and
//!    decrypts her message: his keys go up and her room key comes down (the `e2ee` and
//!    `to_device` extensions), as Element X's encryption sync needs.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use hearth_sdk_tests::{
    client::{
        create_private_room, login, own_user_id, register, room_of, send_text, sync_once,
        synced_joins,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::{
    Client, RoomState, SlidingSync, SlidingSyncList, SlidingSyncMode,
    ruma::{
        OwnedRoomId,
        events::{
            StateEventType,
            room::{
                encryption::RoomEncryptionEventContent,
                message::{MessageType, OriginalSyncRoomMessageEvent},
            },
        },
    },
    sliding_sync::Version,
};
use tokio::time::Instant;

const ALICE: &str = "alice";
const BOB: &str = "bob";
const SECRET: &str = "for bob's eyes, over sliding sync";

/// How long the client may take to see something through sliding sync.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);

/// The message bodies each room's timeline brought, in order.
type Seen = Arc<Mutex<BTreeMap<OwnedRoomId, Vec<String>>>>;

#[tokio::test(flavor = "multi_thread")]
async fn sliding_sync_lists_the_rooms_with_their_latest_messages_and_delivers_new_ones_live()
-> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    let writer = login(server.url(), ALICE).await?;
    let mut rooms = Vec::new();
    for n in 1..=3 {
        let room = create_private_room(&writer, &format!("Room {n}")).await?;
        send_text(&room, &format!("first words in room {n}")).await?;
        send_text(&room, &format!("latest in room {n}")).await?;
        rooms.push(room.room_id().to_owned());
    }

    let reader = login(server.url(), ALICE).await?;
    let versions = reader.available_sliding_sync_versions().await;
    let native = versions.iter().any(|version| matches!(version, Version::Native));
    ensure!(native, "/versions offers no sliding sync: {versions:?}");
    let seen = collect_messages(&reader);
    let sliding_sync = room_list(&reader).await?;

    sync_until(&sliding_sync, "every room and its latest message", || {
        let seen = seen.lock().unwrap();
        rooms.iter().enumerate().all(|(index, room_id)| {
            let latest = format!("latest in room {}", index + 1);
            seen.get(room_id).is_some_and(|bodies| bodies.last() == Some(&latest))
        })
    })
    .await?;
    let list =
        sliding_sync.on_list("all", |list| std::future::ready(list.maximum_number_of_rooms()));
    ensure!(list.await == Some(Some(3)), "the list counts three rooms");
    for (index, room_id) in rooms.iter().enumerate() {
        let room = room_of(&reader, room_id)?;
        let name = room.name();
        ensure!(name.as_deref() == Some(&format!("Room {}", index + 1)), "{room_id}: {name:?}");
    }

    let live = room_of(&writer, &rooms[1])?;
    send_text(&live, "a new message, live").await?;
    sync_until(&sliding_sync, "the live message", || {
        let seen = seen.lock().unwrap();
        seen.get(&rooms[1]).and_then(|b| b.last()).map(String::as_str)
            == Some("a new message, live")
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sliding_sync_client_joins_an_encrypted_room_and_decrypts_its_messages()
-> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let bob = login(server.url(), BOB).await?;
    let seen = collect_messages(&bob);
    let bob_sync = room_list(&bob).await?;
    sync_once(&alice).await?;
    // Bob's first answers upload his device and one-time keys.
    bob_sync.sync_once().await.context("bob's first sliding sync")?;

    let room = create_private_room(&alice, "Secret").await?;
    let room_id = room.room_id().to_owned();
    room.send_state_event(RoomEncryptionEventContent::with_recommended_defaults())
        .await
        .context("PUT /_matrix/client/v3/rooms/{roomId}/state/m.room.encryption")?;
    let bob_id = own_user_id(&bob)?;
    room.invite_user_by_id(&bob_id).await.context("POST /rooms/{roomId}/invite")?;
    sync_until(&bob_sync, "alice's invite", || {
        bob.get_room(&room_id).is_some_and(|room| room.state() == RoomState::Invited)
    })
    .await?;
    room_of(&bob, &room_id)?.join().await.context("POST /_matrix/client/v3/join")?;

    let deadline = SYNC_DEADLINE;
    hearth_sdk_tests::client::sync_until(&alice, deadline, "bob's join", |response| {
        synced_joins(response, &room_id).contains(&bob_id)
    })
    .await?;
    let alices_room = room_of(&alice, &room_id)?;
    ensure!(alices_room.encryption_state().is_encrypted(), "alice's client encrypts the room");
    send_text(&alices_room, SECRET).await?;
    sync_until(&bob_sync, "alice's message, decrypted", || {
        let seen = seen.lock().unwrap();
        seen.get(&room_id).is_some_and(|bodies| bodies.iter().any(|body| body == SECRET))
    })
    .await
}

/// A sliding sync connection with one list of every room, growing two at a time, with the
/// state and extensions a room list asks for.
async fn room_list(client: &Client) -> anyhow::Result<SlidingSync> {
    let list = SlidingSyncList::builder("all")
        .sync_mode(SlidingSyncMode::new_growing(2))
        .timeline_limit(5)
        .required_state(vec![
            (StateEventType::RoomName, String::new()),
            (StateEventType::RoomEncryption, String::new()),
            (StateEventType::RoomMember, "$LAZY".to_owned()),
            (StateEventType::RoomMember, "$ME".to_owned()),
        ]);
    client
        .sliding_sync("room-list")?
        .version(Version::Native)
        .add_list(list)
        .with_all_extensions()
        .poll_timeout(Duration::from_secs(2))
        .build()
        .await
        .context("building the sliding sync connection")
}

/// Records the body of every text message the client's syncs deliver, per room.
fn collect_messages(client: &Client) -> Seen {
    let seen = Seen::default();
    let sink = seen.clone();
    client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: matrix_sdk::Room| {
        let sink = sink.clone();
        async move {
            if let MessageType::Text(text) = event.content.msgtype {
                let mut seen = sink.lock().unwrap();
                seen.entry(room.room_id().to_owned()).or_default().push(text.body);
            }
        }
    });
    seen
}

/// Runs the connection's requests until `done` holds, or fails after [`SYNC_DEADLINE`].
async fn sync_until(
    sliding_sync: &SlidingSync,
    what: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    while !done() {
        if Instant::now() >= deadline {
            bail!("sliding sync did not bring {what} within {SYNC_DEADLINE:?}");
        }
        let summary = tokio::time::timeout_at(deadline, sliding_sync.sync_once()).await;
        match summary {
            Ok(result) => {
                result.with_context(|| format!("sliding sync, waiting for {what}"))?;
            }
            Err(_) => bail!("sliding sync did not bring {what} within {SYNC_DEADLINE:?}"),
        }
    }
    Ok(())
}
