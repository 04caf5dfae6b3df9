//! Syncs that carry receipts and typing: a user in `sizes.busy_rooms` rooms, each shared with
//! two of a handful of other users, who in every round send a message, mark it read and start
//! (or stop) typing in every room. After each round the user's incremental `/sync`, which then
//! holds a message, receipts and typing for every room, is timed; at the end so is their initial
//! `/sync` of all those rooms.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::json;

use crate::{
    client::{Client, SyncReply, User},
    workload::{SETUP_CONCURRENCY, Sizes, register_users, shared_room_with},
};

/// The other users the busy rooms are shared with; each room has two of them.
const CHATTERS: usize = 6;
/// Messages in each room before the rounds start.
const BACKLOG: usize = 10;

/// The result of the busy-rooms workload.
pub struct BusyRooms {
    pub rooms: usize,
    /// The incremental `/sync` after each round.
    pub incremental: Vec<Duration>,
    /// The size of the last incremental answer.
    pub incremental_bytes: usize,
    /// Initial syncs at the end.
    pub initial: Vec<Duration>,
    pub initial_bytes: usize,
}

/// One busy room and the two users who talk in it.
struct BusyRoom {
    room_id: String,
    talkers: [User; 2],
}

/// Sets up the rooms, runs the rounds, and times the syncs.
pub async fn busy_rooms(client: &Client, prefix: &str, sizes: Sizes) -> anyhow::Result<BusyRooms> {
    let reader = register_users(client, prefix, "busy", 1).await?.remove(0);
    let chatters = register_users(client, prefix, "chatter", CHATTERS).await?;
    let rooms: Vec<BusyRoom> = stream::iter(0..sizes.busy_rooms)
        .map(|index| {
            let talkers =
                [chatters[index % CHATTERS].clone(), chatters[(index + 1) % CHATTERS].clone()];
            create_busy_room(client, &reader, talkers, index)
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let mut since = client.sync(&reader, None, 0).await?.next_batch()?;
    let mut result = BusyRooms {
        rooms: rooms.len(),
        incremental: Vec::new(),
        incremental_bytes: 0,
        initial: Vec::new(),
        initial_bytes: 0,
    };
    for round in 0..sizes.busy_rounds {
        run_round(client, &rooms, round).await?;
        let started = Instant::now();
        let reply = client.sync(&reader, Some(&since), 0).await?;
        check_busy(&reply, rooms.len(), "incremental")?;
        result.incremental.push(reply.received - started);
        result.incremental_bytes = reply.bytes;
        since = reply.next_batch()?;
    }
    for _ in 0..sizes.initial_syncs {
        let started = Instant::now();
        let reply = client.sync(&reader, None, 0).await?;
        check_busy(&reply, rooms.len(), "initial")?;
        result.initial.push(reply.received - started);
        result.initial_bytes = reply.bytes;
    }
    Ok(result)
}

/// Creates a busy room of `reader` and `talkers` with a backlog of messages.
async fn create_busy_room(
    client: &Client,
    reader: &User,
    talkers: [User; 2],
    index: usize,
) -> anyhow::Result<BusyRoom> {
    let members = [talkers[0].clone(), reader.clone(), talkers[1].clone()];
    let body = json!({ "preset": "public_chat", "name": format!("busy {index}") });
    let room_id = shared_room_with(client, &members, body).await?;
    for message in 0..BACKLOG {
        let text = format!("backlog {message} in busy room {index}");
        let talker = &talkers[message % 2];
        client.send_text(talker, &room_id, &format!("backlog-{index}-{message}"), &text).await?;
    }
    Ok(BusyRoom { room_id, talkers })
}

/// In every room: one talker sends a message, both mark it read, and one starts (on even rounds)
/// or stops typing.
async fn run_round(client: &Client, rooms: &[BusyRoom], round: usize) -> anyhow::Result<()> {
    stream::iter(rooms)
        .map(|room| async move {
            let [first, second] = &room.talkers;
            let txn_id = format!("round-{round}");
            let text = format!("round {round}");
            let event_id = client.send_text(first, &room.room_id, &txn_id, &text).await?;
            client.read_receipt(first, &room.room_id, &event_id).await?;
            client.read_receipt(second, &room.room_id, &event_id).await?;
            client.typing(second, &room.room_id, round.is_multiple_of(2)).await
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Fails the run unless every room of the answer carries its receipts (and, in an incremental
/// answer, its typing change).
fn check_busy(reply: &SyncReply, rooms: usize, which: &str) -> anyhow::Result<()> {
    let joined = reply.joined_rooms();
    let receipts = reply.rooms_with_ephemeral("m.receipt");
    let typing = reply.rooms_with_ephemeral("m.typing");
    let typing_ok = which == "initial" || typing == rooms;
    if joined != rooms || receipts != rooms || !typing_ok {
        bail!(
            "the {which} sync held {joined} rooms, {receipts} with receipts and {typing} with \
             typing, of {rooms}"
        );
    }
    Ok(())
}

impl BusyRooms {
    /// "50 rooms, 123 kB" for the last incremental answer.
    pub fn incremental_size(&self) -> String {
        format!("{} rooms, {} kB", self.rooms, self.incremental_bytes / 1000)
    }
}
