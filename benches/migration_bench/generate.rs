//! The generated data directory the move starts from: a real `hearth.toml` and a `hearth.db`
//! filled through the storage API with a household's worth of users and rooms and as many
//! events as asked for.
//!
//! Every PDU is the JSON text of a signed event of a version 12 room, with hashes, signatures,
//! auth and prev events of the lengths real ones have, so that a row of `events` weighs what it
//! weighs on a real server (about 600 to 900 bytes of PDU). The store does not read PDUs, so the
//! hashes and signatures are random bytes, not real ones. Events are appended in big room jobs
//! (one transaction each), and the next job is built while the writer commits the last.
//!
//! Sends carry no client transaction ID here, so `event_transactions` stays empty and the rows
//! copied are (nearly) the events: the rate measures the heavy rows, not small ones beside them.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hearth::{
    config::{FirstRunSettings, RegistrationMode, parse_server_name, template},
    store::{
        CurrentStateChange, NewEvent, NewSession, NewStateGroup, NewUser, RoomTxn, StateEntry,
        StateGroupDelta, Store, open_sqlite,
    },
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{json, value::to_raw_value};

/// The server name of the generated data.
const SERVER_NAME: &str = "home.example";
/// The household: every user has [`DEVICES_PER_USER`] devices and some account data.
const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
const DEVICES_PER_USER: usize = 2;
/// Rooms the events are spread over; each has 2 to 5 of the users as members.
pub const ROOMS: usize = 100;
/// Appends per room job (one SQLite transaction).
const EVENTS_PER_JOB: usize = 10_000;
/// The first event's `origin_server_ts`: November 2023.
const FIRST_TS: i64 = 1_700_000_000_000;

/// Words message bodies are made of.
const WORDS: [&str; 24] = [
    "dinner", "tonight", "school", "pick", "up", "the", "kids", "at", "five", "photos", "from",
    "holiday", "grandma", "called", "shopping", "list", "milk", "bread", "train", "late", "love",
    "you", "see", "soon",
];

/// What was generated, and how long it took.
pub struct Generated {
    pub data_dir: PathBuf,
    pub events: u64,
    pub rooms: usize,
    pub users: usize,
    /// Mean length of a PDU's JSON text, in bytes.
    pub mean_pdu_bytes: f64,
    /// The size of `hearth.db` once its write-ahead log is checkpointed.
    pub db_bytes: u64,
    pub took: Duration,
}

/// A room being filled: its ID, members, the events its new events cite.
struct RoomPlan {
    room_id: OwnedRoomId,
    members: Vec<OwnedUserId>,
    create: OwnedEventId,
    power_levels: OwnedEventId,
    /// The join of each member, in `members` order.
    joins: Vec<OwnedEventId>,
    /// The newest event: the next one's prev event.
    last: OwnedEventId,
    depth: i64,
}

/// Random PDU parts, from one seeded generator so that every run writes the same data.
struct Pdus {
    rng: StdRng,
    ts: i64,
}

/// Writes `hearth.toml` and fills `hearth.db` in `data_dir` with `events` events.
pub async fn data_directory(data_dir: &Path, events: u64) -> anyhow::Result<Generated> {
    let started = Instant::now();
    write_config(data_dir)?;
    let path = data_dir.join(hearth::server::DATABASE_FILE);
    let store = open_sqlite(&path)?;
    let mut pdus = Pdus { rng: StdRng::seed_from_u64(0x4845_4152_5448), ts: FIRST_TS };

    let users = create_users(&store).await?;
    let mut rooms = plan_rooms(&mut pdus, &users);
    let (state_events, state_bytes) = create_rooms(&store, &mut pdus, &mut rooms).await?;
    let messages = events.saturating_sub(state_events);
    let message_bytes = append_messages(&store, &mut pdus, &mut rooms, messages).await?;
    add_account_data(&store, &users, &rooms).await?;
    drop(store);

    let db_bytes = checkpoint(&path)?;
    let bytes = state_bytes + message_bytes;
    let events = state_events + messages;
    Ok(Generated {
        data_dir: data_dir.to_owned(),
        events,
        rooms: rooms.len(),
        users: users.len(),
        mean_pdu_bytes: bytes as f64 / events.max(1) as f64,
        db_bytes,
        took: started.elapsed(),
    })
}

/// The configuration a first run writes.
fn write_config(data_dir: &Path) -> anyhow::Result<()> {
    let settings = FirstRunSettings {
        server_name: parse_server_name(SERVER_NAME)?,
        listen: "127.0.0.1:0".parse()?,
        registration: RegistrationMode::Closed,
    };
    std::fs::write(data_dir.join(hearth::config::CONFIG_FILE), template(&settings))
        .context("cannot write hearth.toml")
}

fn user_id(name: &str) -> anyhow::Result<OwnedUserId> {
    Ok(OwnedUserId::try_from(format!("@{name}:{SERVER_NAME}"))?)
}

/// The household's accounts, each with its devices (and their access tokens) and global account
/// data.
async fn create_users(store: &Store) -> anyhow::Result<Vec<OwnedUserId>> {
    let mut users = Vec::new();
    for (n, name) in USERS.iter().enumerate() {
        let user_id = user_id(name)?;
        let password_hash = Some(format!("$argon2id$v=19$m=19456,t=2,p=1${}", random_b64(22)));
        let user = NewUser {
            user_id: user_id.clone(),
            password_hash,
            is_admin: n == 0,
            created_ts: FIRST_TS,
        };
        store.create_user(user).await?;
        for device in 0..DEVICES_PER_USER {
            let session = NewSession {
                user_id: user_id.clone(),
                device_id: format!("{}{device}", name.to_uppercase()),
                display_name: Some(format!("{name}'s phone {device}")),
                token_hash: random_b64(32),
                created_ts: FIRST_TS,
                expires_ts: None,
                refresh_token_hash: None,
            };
            store.create_session(session).await?;
        }
        let push_rules = json!({"global": {"override": [], "underride": [], "content": [
            {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
             "pattern": name, "actions": ["notify", {"set_tweak": "sound", "value": "default"}]}
        ]}});
        store.set_account_data(&user_id, None, "m.push_rules", &to_raw_value(&push_rules)?).await?;
        users.push(user_id);
    }
    Ok(users)
}

/// Gives every room its members and the IDs of the state events that will create it.
fn plan_rooms(pdus: &mut Pdus, users: &[OwnedUserId]) -> Vec<RoomPlan> {
    (0..ROOMS)
        .map(|_| {
            let count = pdus.rng.gen_range(2..=5);
            let members: Vec<OwnedUserId> =
                users.choose_multiple(&mut pdus.rng, count).cloned().collect();
            let room_id = format!("!{}:{SERVER_NAME}", random_b64_with(&mut pdus.rng, 14));
            RoomPlan {
                room_id: OwnedRoomId::try_from(room_id).expect("a valid room ID"),
                joins: Vec::new(),
                create: pdus.event_id(),
                power_levels: pdus.event_id(),
                last: pdus.event_id(),
                members,
                depth: 0,
            }
        })
        .collect()
}

/// Creates the rooms with their state (create, joins, power levels, join rules, history
/// visibility, name) in one job. Returns how many events that was and their PDUs' bytes.
async fn create_rooms(
    store: &Store,
    pdus: &mut Pdus,
    rooms: &mut [RoomPlan],
) -> anyhow::Result<(u64, u64)> {
    let mut events = Vec::new();
    for room in rooms.iter_mut() {
        events.extend(room_state(pdus, room));
    }
    let counted = (events.len() as u64, events.iter().map(|e| e.pdu.len() as u64).sum());
    let created: Vec<OwnedRoomId> = rooms.iter().map(|r| r.room_id.clone()).collect();
    write_job(store, created, events).await?;
    Ok(counted)
}

/// A room's initial state events, in the order a room is created.
fn room_state(pdus: &mut Pdus, room: &mut RoomPlan) -> Vec<NewEvent> {
    let creator = room.members[0].to_string();
    let create = json!({"creator": creator, "room_version": "12"});
    let mut state = vec![(0, room.create.clone(), "m.room.create", String::new(), create)];
    for (n, member) in room.members.iter().enumerate() {
        let id = pdus.event_id();
        room.joins.push(id.clone());
        let content = json!({"membership": "join", "displayname": member.localpart()});
        state.push((n, id, "m.room.member", member.to_string(), content));
    }
    let users: serde_json::Map<_, _> =
        room.members.iter().map(|m| (m.to_string(), json!(100))).collect();
    let power_levels = json!({"users": users, "events_default": 0, "state_default": 50});
    let power_levels_id = room.power_levels.clone();
    state.push((0, power_levels_id, "m.room.power_levels", String::new(), power_levels));
    let join_rules = json!({"join_rule": "invite"});
    state.push((0, pdus.event_id(), "m.room.join_rules", String::new(), join_rules));
    let visibility = json!({"history_visibility": "shared"});
    state.push((0, pdus.event_id(), "m.room.history_visibility", String::new(), visibility));
    let name = json!({"name": format!("Family room {}", pdus.rng.gen_range(1..1000))});
    state.push((0, room.last.clone(), "m.room.name", String::new(), name));
    state
        .into_iter()
        .map(|(sender, event_id, event_type, state_key, content)| {
            pdus.event(room, sender, event_id, event_type, Some(state_key), content)
        })
        .collect()
}

/// Appends `count` messages spread over the rooms, [`EVENTS_PER_JOB`] per job, building each
/// job while the writer commits the one before. Returns the PDUs' bytes.
async fn append_messages(
    store: &Store,
    pdus: &mut Pdus,
    rooms: &mut [RoomPlan],
    count: u64,
) -> anyhow::Result<u64> {
    let mut bytes = 0;
    let mut left = count;
    let mut pending: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let mut last_report = Instant::now();
    while left > 0 {
        let batch = left.min(EVENTS_PER_JOB as u64);
        let events: Vec<NewEvent> = (0..batch).map(|_| message(pdus, rooms)).collect();
        bytes += events.iter().map(|e| e.pdu.len() as u64).sum::<u64>();
        if let Some(pending) = pending.take() {
            pending.await.context("a room job panicked")??;
        }
        let store = store.clone();
        pending = Some(tokio::spawn(async move { write_job(&store, Vec::new(), events).await }));
        left -= batch;
        if last_report.elapsed() > Duration::from_secs(10) {
            crate::progress(&format!("generated {} of {count} messages", count - left));
            last_report = Instant::now();
        }
    }
    if let Some(pending) = pending {
        pending.await.context("a room job panicked")??;
    }
    Ok(bytes)
}

/// A message from a random member of a random room.
fn message(pdus: &mut Pdus, rooms: &mut [RoomPlan]) -> NewEvent {
    let index = pdus.rng.gen_range(0..rooms.len());
    let room = &mut rooms[index];
    let sender = pdus.rng.gen_range(0..room.members.len());
    let words = pdus.rng.gen_range(6..=50);
    let body: Vec<&str> =
        (0..words).map(|_| *WORDS.choose(&mut pdus.rng).expect("words")).collect();
    let content = json!({"body": body.join(" "), "msgtype": "m.text"});
    let event_id = pdus.event_id();
    pdus.event(room, sender, event_id, "m.room.message", None, content)
}

/// Runs one room job: creates `rooms`, then appends `events` in order.
async fn write_job(
    store: &Store,
    rooms: Vec<OwnedRoomId>,
    events: Vec<NewEvent>,
) -> anyhow::Result<()> {
    let job = move |txn: &dyn RoomTxn| {
        for room_id in &rooms {
            txn.create_room(room_id, &RoomVersionId::V12, FIRST_TS)?;
        }
        for mut event in events {
            place(txn, &mut event)?;
            txn.append_event(event)?;
        }
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.map_err(|e| anyhow!("a room job failed: {e}"))?;
    Ok(())
}

/// Gives a generated event its state as the rooms module would in a linear room: a message stays
/// in its prev event's state group, a state event adds a one-entry delta (or the first snapshot)
/// and becomes the current state of its key. Every member joins, so a membership is "join".
fn place(txn: &dyn RoomTxn, event: &mut NewEvent) -> Result<(), hearth::Error> {
    let prev_group = match event.prev_events.first() {
        Some(prev) => txn.event_state_group(prev)?,
        None => None,
    };
    let Some(state_key) = event.state_key.clone() else {
        let group = prev_group.ok_or_else(|| anyhow!("a message before any state"))?;
        event.state_group = NewStateGroup::Existing(group);
        return Ok(());
    };
    let entry = StateEntry {
        event_type: event.event_type.clone(),
        state_key: state_key.clone(),
        event_id: Some(event.event_id.clone()),
    };
    let chain_length = match prev_group {
        Some(group) => txn.state_group_delta(group)?.map_or(0, |d| d.chain_length + 1),
        None => 0,
    };
    event.state_group = NewStateGroup::New(StateGroupDelta {
        parent: prev_group,
        chain_length,
        entries: vec![entry],
    });
    let membership = (event.event_type == "m.room.member").then(|| "join".to_owned());
    event.current_state = vec![CurrentStateChange {
        event_type: event.event_type.clone(),
        state_key,
        event_id: Some(event.event_id.clone()),
        membership,
    }];
    Ok(())
}

/// Per-room account data: where each member read up to, and a tag on some rooms.
async fn add_account_data(
    store: &Store,
    users: &[OwnedUserId],
    rooms: &[RoomPlan],
) -> anyhow::Result<()> {
    for (n, room) in rooms.iter().enumerate() {
        for member in &room.members {
            let read = to_raw_value(&json!({"event_id": room.last}))?;
            store.set_account_data(member, Some(&room.room_id), "m.fully_read", &read).await?;
            if n % 5 == 0 {
                let tags = to_raw_value(&json!({"tags": {"m.favourite": {"order": 0.5}}}))?;
                store.set_account_data(member, Some(&room.room_id), "m.tag", &tags).await?;
            }
        }
    }
    for user in users {
        let direct = to_raw_value(&json!({}))?;
        store.set_account_data(user, None, "m.direct", &direct).await?;
    }
    Ok(())
}

/// Folds the write-ahead log into the file (the store's writer may still be closing: the busy
/// timeout waits for it) and returns the file's size.
fn checkpoint(path: &Path) -> anyhow::Result<u64> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(30))?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(path)?.len())
}

impl Pdus {
    /// A fresh event ID as version 12 rooms have them: `$` and a URL-safe SHA-256.
    fn event_id(&mut self) -> OwnedEventId {
        let id = format!("${}", random_b64_with(&mut self.rng, 32));
        OwnedEventId::try_from(id).expect("a valid event ID")
    }

    /// The next event of `room`, from its member number `sender`, with a full signed PDU.
    fn event(
        &mut self,
        room: &mut RoomPlan,
        sender: usize,
        event_id: OwnedEventId,
        event_type: &str,
        state_key: Option<String>,
        content: serde_json::Value,
    ) -> NewEvent {
        self.ts += self.rng.gen_range(1..60_000);
        room.depth += 1;
        let sender_id = room.members[sender].clone();
        let prev_events = if room.depth == 1 { Vec::new() } else { vec![room.last.clone()] };
        let mut auth_events = vec![room.create.to_string(), room.power_levels.to_string()];
        if let Some(join) = room.joins.get(sender) {
            auth_events.push(join.to_string());
        }
        let mut pdu = json!({
            "auth_events": auth_events,
            "content": content,
            "depth": room.depth,
            "hashes": {"sha256": random_b64_with(&mut self.rng, 32)},
            "origin_server_ts": self.ts,
            "prev_events": prev_events,
            "room_id": room.room_id,
            "sender": sender_id,
            "signatures": {SERVER_NAME: {"ed25519:a_hEaR": random_b64_with(&mut self.rng, 64)}},
            "type": event_type,
        });
        if let Some(state_key) = &state_key {
            pdu["state_key"] = json!(state_key);
        }
        room.last = event_id.clone();
        let search = hearth::search::text::text_of_content(
            event_type,
            state_key.as_deref(),
            &pdu["content"],
        );
        NewEvent {
            event_id,
            room_id: room.room_id.clone(),
            event_type: event_type.to_owned(),
            state_key,
            sender: sender_id,
            origin_server_ts: self.ts,
            depth: room.depth,
            prev_events,
            pdu: pdu.to_string(),
            transaction: None,
            // Filled in by `place` inside the room job, which sees the prev event's group.
            replaces_state: None,
            relation: None,
            search,
            state_group: NewStateGroup::Existing(0),
            current_state: Vec::new(),
        }
    }
}

fn random_b64(bytes: usize) -> String {
    random_b64_with(&mut rand::thread_rng(), bytes)
}

/// `bytes` random bytes in unpadded URL-safe base64, as Matrix writes hashes and signatures.
fn random_b64_with(rng: &mut impl rand::Rng, bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rng.r#gen()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}
