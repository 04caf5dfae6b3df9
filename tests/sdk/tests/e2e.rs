//! The end-to-end scenario against the real `hearth` binary (named by `HEARTH_BIN`), driven
//! entirely through `matrix-sdk`:
//!
//! 1. alice and bob register (interactive auth with `m.login.dummy`) and log in;
//! 2. alice creates a private room and invites bob; bob sees the invite through `/sync` and joins;
//! 3. they greet each other, and both see both messages through `/sync`;
//! 4. alice sends 500 messages, and bob pages back through the whole history with `/messages`,
//!    getting every message exactly once in reverse send order;
//! 5. the server is killed with SIGKILL and restarted on the same data directory; both log in
//!    again and find the room, both memberships and the whole history, and can still talk.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, ensure};
use hearth_sdk_tests::{
    client::{
        invite_and_join, login, message_bodies_backward, register, room_of, send_text, sync_once,
        sync_until, synced_bodies, user_id,
    },
    init_logging,
    server::{SERVER_NAME, TestServer},
};
use matrix_sdk::{Client, RoomMemberships, RoomState, ruma::RoomId};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const ROOM_NAME: &str = "hearth sdk e2e";
const GREETING_TO_BOB: &str = "hello bob";
const GREETING_TO_ALICE: &str = "hello alice";
const AFTER_RESTART: &str = "still here after SIGKILL";

/// How many messages alice sends in a burst.
const BURST: usize = 500;

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn chat_history_survives_sigkill() -> anyhow::Result<()> {
    init_logging();
    let mut server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let bob = login(server.url(), BOB).await?;
    check_user_ids(&alice, &bob)?;

    let room_id = invite_and_join(&alice, &bob, ROOM_NAME, SYNC_DEADLINE).await?;
    exchange_greetings(&alice, &bob, &room_id).await?;
    send_burst(&alice, &bob, &room_id).await?;
    let history = message_bodies_backward(&room_of(&bob, &room_id)?).await?;
    check_history(&history, "bob, before the restart")?;

    server.kill_and_restart().await?;
    let alice = check_after_restart(server.url(), ALICE, &room_id).await?;
    let bob = check_after_restart(server.url(), BOB, &room_id).await?;
    still_talking(&alice, &bob, &room_id).await
}

/// Both users have the IDs the default server name gives them.
fn check_user_ids(alice: &Client, bob: &Client) -> anyhow::Result<()> {
    ensure!(alice.user_id() == Some(&*user_id(ALICE, SERVER_NAME)?), "{:?}", alice.user_id());
    ensure!(bob.user_id() == Some(&*user_id(BOB, SERVER_NAME)?), "{:?}", bob.user_id());
    Ok(())
}

/// Alice greets bob, bob answers, and each sees both messages, in order, through sync.
async fn exchange_greetings(alice: &Client, bob: &Client, room_id: &RoomId) -> anyhow::Result<()> {
    let expected = [GREETING_TO_BOB, GREETING_TO_ALICE];

    send_text(&room_of(alice, room_id)?, GREETING_TO_BOB).await?;
    let mut seen_by_bob = Vec::new();
    sync_until(bob, SYNC_DEADLINE, "alice's greeting", |r| {
        seen_by_bob.extend(synced_bodies(r, room_id));
        seen_by_bob.iter().any(|body| body == GREETING_TO_BOB)
    })
    .await?;

    send_text(&room_of(bob, room_id)?, GREETING_TO_ALICE).await?;
    sync_until(bob, SYNC_DEADLINE, "bob's own answer", |r| {
        seen_by_bob.extend(synced_bodies(r, room_id));
        seen_by_bob.iter().any(|body| body == GREETING_TO_ALICE)
    })
    .await?;
    ensure!(seen_by_bob == expected, "bob's syncs showed {seen_by_bob:?}");

    let mut seen_by_alice = Vec::new();
    sync_until(alice, SYNC_DEADLINE, "bob's answer", |r| {
        seen_by_alice.extend(synced_bodies(r, room_id));
        seen_by_alice.iter().any(|body| body == GREETING_TO_ALICE)
    })
    .await?;
    ensure!(seen_by_alice == expected, "alice's syncs showed {seen_by_alice:?}");
    Ok(())
}

/// The body of the `index`th message of the burst.
fn burst_body(index: usize) -> String {
    format!("message {index:03}")
}

/// Alice sends the burst; bob's sync then reaches its last message.
async fn send_burst(alice: &Client, bob: &Client, room_id: &RoomId) -> anyhow::Result<()> {
    let room = room_of(alice, room_id)?;
    for index in 0..BURST {
        send_text(&room, &burst_body(index)).await.with_context(|| format!("message {index}"))?;
    }
    let last = burst_body(BURST - 1);
    sync_until(bob, SYNC_DEADLINE, "the last message of the burst", |r| {
        synced_bodies(r, room_id).contains(&last)
    })
    .await
}

/// Every message body of the room, newest first.
fn expected_history() -> Vec<String> {
    let burst = (0..BURST).rev().map(burst_body);
    burst.chain([GREETING_TO_ALICE, GREETING_TO_BOB].map(str::to_owned)).collect()
}

/// `history` (newest first) is exactly [`expected_history`]; otherwise says where it differs.
fn check_history(history: &[String], whose: &str) -> anyhow::Result<()> {
    let expected = expected_history();
    if history == expected {
        return Ok(());
    }
    let first_difference = history.iter().zip(&expected).position(|(got, want)| got != want);
    let got: BTreeSet<_> = history.iter().collect();
    let missing: Vec<_> = expected.iter().filter(|body| !got.contains(body)).take(10).collect();
    anyhow::bail!(
        "{whose}: /messages gave {} message bodies, expected {}; first difference at index \
         {first_difference:?}; first missing: {missing:?}",
        history.len(),
        expected.len(),
    )
}

/// After the restart, `localpart` logs in again and finds the room joined, both members, its
/// name and its whole history.
async fn check_after_restart(
    url: &str,
    localpart: &str,
    room_id: &RoomId,
) -> anyhow::Result<Client> {
    let client = login(url, localpart).await?;
    sync_once(&client).await?;
    let room = room_of(&client, room_id)?;
    ensure!(room.state() == RoomState::Joined, "{localpart}'s room state: {:?}", room.state());
    ensure!(
        client.joined_rooms().iter().any(|joined| joined.room_id() == room_id),
        "{room_id} is not among {localpart}'s joined rooms"
    );
    ensure!(room.name().as_deref() == Some(ROOM_NAME), "room name: {:?}", room.name());

    let members = room
        .members(RoomMemberships::JOIN)
        .await
        .with_context(|| format!("GET /_matrix/client/v3/rooms/{room_id}/members"))?;
    let members: BTreeSet<_> = members.iter().map(|member| member.user_id().to_owned()).collect();
    let expected: BTreeSet<_> = [user_id(ALICE, SERVER_NAME)?, user_id(BOB, SERVER_NAME)?].into();
    ensure!(members == expected, "{localpart} sees joined members {members:?}");

    let history = message_bodies_backward(&room).await?;
    check_history(&history, &format!("{localpart}, after the restart"))?;
    Ok(client)
}

/// The restarted server still accepts and delivers new messages.
async fn still_talking(alice: &Client, bob: &Client, room_id: &RoomId) -> anyhow::Result<()> {
    send_text(&room_of(alice, room_id)?, AFTER_RESTART).await?;
    sync_until(bob, SYNC_DEADLINE, "the message sent after the restart", |r| {
        synced_bodies(r, room_id).iter().any(|body| body == AFTER_RESTART)
    })
    .await
}
