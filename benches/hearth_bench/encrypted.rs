//! The encrypted-room fan-out: what a client does when it sends into an end-to-end encrypted
//! room with a new Megolm session, seen from the members' long polls.
//!
//! The sender shares the session key with every member's device in one `/sendToDevice`
//! (Olm-shaped `m.room.encrypted` content), then sends the `m.room.encrypted` room event. Each
//! sample is the time from the start of the key share until the last member's `/sync` answer
//! holding both the key and the message has arrived: the moment every member can read it. The
//! ciphertexts are random-looking text of a real message's size; the server cannot tell them
//! from real ones, as it never decrypts.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::try_join_all;
use serde_json::{Map, Value, json};

use crate::{
    client::{Client, SyncReply, User},
    workload::{LONG_POLL_MS, PARK_DELAY, Sizes, register_users, shared_room_with},
};

/// The Megolm ciphertext's length: a short message, padded and base64-encoded.
const MEGOLM_CIPHERTEXT_LEN: usize = 400;
/// An Olm pre-key message carrying a room key is about this long.
const OLM_BODY_LEN: usize = 900;

/// The result of the encrypted fan-out workload.
pub struct Fanout {
    /// Members besides the sender.
    pub members: usize,
    /// Per sample: from the start of the key share to the last member's answer.
    pub all_members: Vec<Duration>,
    /// Per member and sample: from the start of the key share to that member's answer.
    pub each_member: Vec<Duration>,
    /// The round trip of the `/sendToDevice` to every member's device.
    pub key_shares: Vec<Duration>,
}

/// One member's long-poll position.
struct Member {
    user: User,
    since: String,
}

/// Runs `sizes.encrypted_samples` samples in an encrypted room of `sizes.encrypted_members`
/// members and a sender.
pub async fn encrypted_fanout(
    client: &Client,
    prefix: &str,
    sizes: Sizes,
) -> anyhow::Result<Fanout> {
    let users = register_users(client, prefix, "e2ee", sizes.encrypted_members + 1).await?;
    let body = json!({
        "preset": "public_chat",
        "name": "encrypted",
        "initial_state": [{
            "type": "m.room.encryption",
            "state_key": "",
            "content": { "algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 100 },
        }],
    });
    let room_id = shared_room_with(client, &users, body).await?;
    let (sender, others) = users.split_first().context("no sender")?;
    let mut members = Vec::with_capacity(others.len());
    for user in others {
        let since = client.sync(user, None, 0).await?.next_batch()?;
        members.push(Member { user: user.clone(), since });
    }
    let mut fanout = Fanout {
        members: members.len(),
        all_members: Vec::new(),
        each_member: Vec::new(),
        key_shares: Vec::new(),
    };
    for index in 0..sizes.encrypted_samples {
        members = fanout_sample(client, sender, &room_id, members, index, &mut fanout).await?;
    }
    Ok(fanout)
}

/// Takes one sample; returns the members with their next `since` tokens.
async fn fanout_sample(
    client: &Client,
    sender: &User,
    room_id: &str,
    members: Vec<Member>,
    index: usize,
    fanout: &mut Fanout,
) -> anyhow::Result<Vec<Member>> {
    let marker = format!("{index:08}");
    let key_share = key_share_messages(&members, &marker);
    let polls: Vec<_> = members
        .into_iter()
        .map(|member| {
            let (client, room_id, marker) = (client.clone(), room_id.to_owned(), marker.clone());
            tokio::spawn(async move { key_and_message(&client, member, &room_id, &marker).await })
        })
        .collect();
    tokio::time::sleep(PARK_DELAY).await;
    let started = Instant::now();
    client.send_to_device(sender, "m.room.encrypted", &format!("key-{index}"), key_share).await?;
    fanout.key_shares.push(started.elapsed());
    let content = megolm_content(sender, &marker);
    let txn_id = format!("e2ee-{index}");
    client.send_event(sender, room_id, "m.room.encrypted", &txn_id, &content).await?;
    let mut next = Vec::with_capacity(polls.len());
    let mut last = Duration::ZERO;
    for answer in try_join_all(polls).await.context("a member's sync task panicked")? {
        let (member, received) = answer?;
        let latency = received.saturating_duration_since(started);
        fanout.each_member.push(latency);
        last = last.max(latency);
        next.push(member);
    }
    fanout.all_members.push(last);
    Ok(next)
}

/// Long-polls `/sync` for `member` until both the sample's key share and its message have
/// arrived; returns the member with its next `since` and when the later of the two arrived.
async fn key_and_message(
    client: &Client,
    mut member: Member,
    room_id: &str,
    marker: &str,
) -> anyhow::Result<(Member, Instant)> {
    let (mut key, mut message) = (false, false);
    loop {
        let reply = client.sync(&member.user, Some(&member.since), LONG_POLL_MS).await?;
        member.since = reply.next_batch()?;
        key |= holds_key_share(&reply, marker);
        message |= holds_message(&reply, room_id, marker);
        if key && message {
            return Ok((member, reply.received));
        }
    }
}

fn holds_key_share(reply: &SyncReply, marker: &str) -> bool {
    reply.to_device().iter().any(|event| {
        let bodies = event["content"]["ciphertext"].as_object();
        bodies.is_some_and(|bodies| bodies.values().any(|body| starts_with(&body["body"], marker)))
    })
}

fn holds_message(reply: &SyncReply, room_id: &str, marker: &str) -> bool {
    reply.timeline(room_id).iter().any(|event| {
        event["type"] == "m.room.encrypted" && starts_with(&event["content"]["ciphertext"], marker)
    })
}

fn starts_with(value: &Value, marker: &str) -> bool {
    value.as_str().is_some_and(|text| text.starts_with(marker))
}

/// One Olm-shaped `m.room.encrypted` to-device message per member device, each with its own
/// ciphertext (as each is encrypted for its recipient's identity key).
fn key_share_messages(members: &[Member], marker: &str) -> Value {
    let mut messages = Map::new();
    for (index, member) in members.iter().enumerate() {
        let content = json!({
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": filler("senderkey", 43),
            "ciphertext": {
                filler(&format!("identity{index}"), 43): {
                    "type": 0,
                    "body": format!("{marker}{}", filler(&member.user.user_id, OLM_BODY_LEN)),
                },
            },
        });
        messages
            .insert(member.user.user_id.clone(), json!({ member.user.device_id.clone(): content }));
    }
    Value::Object(messages)
}

/// A Megolm-shaped `m.room.encrypted` room event's content.
fn megolm_content(sender: &User, marker: &str) -> Value {
    json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": filler("senderkey", 43),
        "device_id": sender.device_id,
        "session_id": filler("session", 43),
        "ciphertext": format!("{marker}{}", filler("megolm", MEGOLM_CIPHERTEXT_LEN)),
    })
}

/// `len` characters of unpadded-base64-looking text derived from `seed`.
fn filler(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |state, byte| {
        (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % 64) as usize])
        })
        .collect()
}
