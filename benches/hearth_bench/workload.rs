//! The core workloads: concurrent sends in one room, send→sync wake-up latency, and the initial
//! `/sync` of a user in many rooms full of events (the encrypted fan-out and the busy rooms are
//! in `encrypted.rs` and `busy_rooms.rs`).
//!
//! Every workload registers its own users (named with the run's prefix, so that runs against an
//! external server never collide) and its own rooms, so that one workload's rooms and members do
//! not weigh on another's measurement.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

use crate::client::{Client, SyncReply, User};

/// How many registrations (and joins) run at once while setting up.
pub const SETUP_CONCURRENCY: usize = 8;
/// How many rooms are filled at once for the initial-sync workload.
const FILL_CONCURRENCY: usize = 16;
/// How long a wake-up sample waits after starting its long poll before sending, so that the
/// poll is parked in the server when the event arrives.
pub const PARK_DELAY: Duration = Duration::from_millis(25);
/// The long-poll timeout of wake-up samples; far above any expected latency.
pub const LONG_POLL_MS: u64 = 30_000;

/// How big each workload is.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Concurrent clients (one user each) sending into one room.
    pub senders: usize,
    /// Messages each of them sends.
    pub sends_per_sender: usize,
    /// Send→sync wake-up samples.
    pub wake_samples: usize,
    /// Rooms the initial-sync user is in.
    pub rooms: usize,
    /// Messages sent into each of those rooms.
    pub messages_per_room: usize,
    /// Initial syncs timed (the median is reported).
    pub initial_syncs: usize,
    /// Starts timed: fresh data directories, and restarts on the filled one.
    pub starts: usize,
    /// Members (one device each) of the encrypted room, besides the sender.
    pub encrypted_members: usize,
    /// Encrypted messages sent to them, each with its key shared to every device first.
    pub encrypted_samples: usize,
    /// Rooms of the user whose syncs carry receipts and typing.
    pub busy_rooms: usize,
    /// Rounds of a message, a receipt and typing in every one of those rooms.
    pub busy_rounds: usize,
}

impl Sizes {
    /// The sizes the targets are stated for.
    pub fn full() -> Self {
        Self {
            senders: 50,
            sends_per_sender: 100,
            wake_samples: 300,
            rooms: 100,
            messages_per_room: 100,
            initial_syncs: 9,
            starts: 5,
            encrypted_members: 20,
            encrypted_samples: 50,
            busy_rooms: 50,
            busy_rounds: 9,
        }
    }

    /// A short run: still 50 clients, fewer of everything else.
    pub fn quick() -> Self {
        Self {
            senders: 50,
            sends_per_sender: 10,
            wake_samples: 50,
            rooms: 20,
            messages_per_room: 20,
            initial_syncs: 3,
            starts: 2,
            encrypted_members: 20,
            encrypted_samples: 10,
            busy_rooms: 50,
            busy_rounds: 3,
        }
    }
}

/// The result of the concurrent-sends workload.
pub struct Throughput {
    pub sends: usize,
    pub elapsed: Duration,
    /// The round trip of each send.
    pub latencies: Vec<Duration>,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.sends as f64 / self.elapsed.as_secs_f64()
    }
}

/// The result of the wake-up workload.
pub struct Wake {
    /// From the start of the send request to the arrival of the sync answer holding the event.
    pub latencies: Vec<Duration>,
    /// The round trip of each send, for comparison.
    pub sends: Vec<Duration>,
    /// Long polls that answered before the event was sent (nothing for them to wait for).
    pub early_answers: usize,
}

/// The result of the initial-sync workload.
pub struct InitialSync {
    pub times: Vec<Duration>,
    /// The size of the last answer's body.
    pub bytes: usize,
    /// How many joined rooms the last answer listed.
    pub rooms: usize,
}

/// Registers `count` users named `{prefix}-{label}-{index}`.
pub async fn register_users(
    client: &Client,
    prefix: &str,
    label: &str,
    count: usize,
) -> anyhow::Result<Vec<User>> {
    stream::iter(0..count)
        .map(|index| {
            let name = format!("{prefix}-{label}-{index}");
            async move { client.register(&name).await.with_context(|| format!("registering {name}")) }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// Makes `users[0]` create a public room that all of `users` then join; returns its ID.
async fn shared_room(client: &Client, users: &[User], name: &str) -> anyhow::Result<String> {
    shared_room_with(client, users, json!({ "preset": "public_chat", "name": name })).await
}

/// Makes `users[0]` create a room from the `/createRoom` body `body` (which must let the
/// others join without an invite), that all of `users` then join; returns its ID.
pub async fn shared_room_with(
    client: &Client,
    users: &[User],
    body: Value,
) -> anyhow::Result<String> {
    let (owner, others) = users.split_first().context("a shared room needs a user")?;
    let room_id = client.create_room_with(owner, body).await?;
    stream::iter(others)
        .map(|user| client.join(user, &room_id))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    Ok(room_id)
}

/// `sizes.senders` users in one room each send `sizes.sends_per_sender` messages, all at once.
pub async fn concurrent_sends(
    client: &Client,
    prefix: &str,
    sizes: Sizes,
) -> anyhow::Result<Throughput> {
    let users = register_users(client, prefix, "sender", sizes.senders).await?;
    let room_id = shared_room(client, &users, "sends").await?;
    // One untimed message each opens every client's connection and warms the server.
    run_senders(client, &users, &room_id, "warm", 1).await?;
    let started = Instant::now();
    let per_user = run_senders(client, &users, &room_id, "timed", sizes.sends_per_sender).await?;
    let elapsed = started.elapsed();
    let latencies: Vec<Duration> = per_user.into_iter().flatten().collect();
    Ok(Throughput { sends: latencies.len(), elapsed, latencies })
}

/// Every user sends `count` messages one after the other, all users concurrently; returns each
/// user's send round trips.
async fn run_senders(
    client: &Client,
    users: &[User],
    room_id: &str,
    phase: &str,
    count: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let tasks = users.iter().map(|user| {
        let (client, user, room_id) = (client.clone(), user.clone(), room_id.to_owned());
        let phase = phase.to_owned();
        tokio::spawn(async move { send_series(&client, &user, &room_id, &phase, count).await })
    });
    let mut results = Vec::with_capacity(users.len());
    for task in tasks.collect::<Vec<_>>() {
        results.push(task.await.context("a sending task panicked")??);
    }
    Ok(results)
}

async fn send_series(
    client: &Client,
    user: &User,
    room_id: &str,
    phase: &str,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        let text = format!("{phase} message {index} from {}", user.user_id);
        client.send_text(user, room_id, &format!("{phase}-{index}"), &text).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// One user long-polls `/sync` while another sends into their shared room; each sample is the
/// time from the start of the send to the arrival of the sync answer holding that event.
pub async fn wake_latency(client: &Client, prefix: &str, sizes: Sizes) -> anyhow::Result<Wake> {
    let users = register_users(client, prefix, "wake", 2).await?;
    let room_id = shared_room(client, &users, "wake").await?;
    let (sleeper, sender) = (&users[0], &users[1]);
    let mut since = client.sync(sleeper, None, 0).await?.next_batch()?;
    let mut wake = Wake { latencies: Vec::new(), sends: Vec::new(), early_answers: 0 };
    for index in 0..sizes.wake_samples {
        since = wake_sample(client, (sleeper, sender), &room_id, index, since, &mut wake).await?;
    }
    Ok(wake)
}

/// Takes one wake-up sample; returns the `since` token for the next one.
async fn wake_sample(
    client: &Client,
    (sleeper, sender): (&User, &User),
    room_id: &str,
    index: usize,
    mut since: String,
    wake: &mut Wake,
) -> anyhow::Result<String> {
    let poll = spawn_sync(client, sleeper, &since);
    tokio::time::sleep(PARK_DELAY).await;
    let sent_at = Instant::now();
    let text = format!("wake-up {index}");
    let event_id = client.send_text(sender, room_id, &format!("wake-{index}"), &text).await?;
    wake.sends.push(sent_at.elapsed());
    let mut reply = poll.await.context("a sync task panicked")??;
    // An answer that holds something else (or came early) is followed by another poll.
    while !reply.has_event(room_id, &event_id) {
        if reply.received < sent_at {
            wake.early_answers += 1;
        }
        since = reply.next_batch()?;
        reply = client.sync(sleeper, Some(&since), LONG_POLL_MS).await?;
    }
    if reply.received < sent_at {
        bail!("a sync answer holding {event_id} arrived before it was sent");
    }
    wake.latencies.push(reply.received - sent_at);
    reply.next_batch()
}

fn spawn_sync(
    client: &Client,
    user: &User,
    since: &str,
) -> tokio::task::JoinHandle<anyhow::Result<SyncReply>> {
    let (client, user, since) = (client.clone(), user.clone(), since.to_owned());
    tokio::spawn(async move { client.sync(&user, Some(&since), LONG_POLL_MS).await })
}

/// A user creates `sizes.rooms` rooms and sends `sizes.messages_per_room` messages into each;
/// then their initial `/sync` (default filter) is timed `sizes.initial_syncs` times.
pub async fn initial_sync(
    client: &Client,
    prefix: &str,
    sizes: Sizes,
) -> anyhow::Result<InitialSync> {
    let user = register_users(client, prefix, "reader", 1).await?.remove(0);
    stream::iter(0..sizes.rooms)
        .map(|index| fill_room(client, &user, index, sizes.messages_per_room))
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let mut result = InitialSync { times: Vec::new(), bytes: 0, rooms: 0 };
    for _ in 0..sizes.initial_syncs {
        let started = Instant::now();
        let reply = client.sync(&user, None, 0).await?;
        result.times.push(reply.received - started);
        (result.bytes, result.rooms) = (reply.bytes, reply.joined_rooms());
    }
    if result.rooms != sizes.rooms {
        bail!("the initial sync listed {} rooms instead of {}", result.rooms, sizes.rooms);
    }
    Ok(result)
}

/// Creates room number `index` and sends `messages` messages into it, one after the other.
async fn fill_room(
    client: &Client,
    user: &User,
    index: usize,
    messages: usize,
) -> anyhow::Result<()> {
    let room_id = client.create_room(user, &format!("room {index}")).await?;
    for message in 0..messages {
        let text = format!("message {message} in room {index}");
        client.send_text(user, &room_id, &format!("fill-{index}-{message}"), &text).await?;
    }
    Ok(())
}
