//! End-to-end encryption between two `matrix-sdk` clients on the real `hearth` binary (named by
//! `HEARTH_BIN`):
//!
//! 1. alice and bob share a private room that alice then encrypts; each client uploads its
//!    device and one-time keys on its own (`/keys/upload`) as it syncs;
//! 2. alice sends a message: her client queries bob's keys, claims a one-time key, sends him the
//!    room key as an Olm-encrypted to-device message and the message Megolm-encrypted; bob's
//!    client receives the room key through `/sync` and decrypts the message;
//! 3. alice bootstraps cross-signing (the first upload needs no password); her own device is then
//!    cross-signed and verified, and bob's client sees her identity and her device signed by it.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use hearth_sdk_tests::{
    client::{
        invite_and_join, login, message_body, own_user_id, register, room_of, send_text, sync_once,
        sync_until,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, events::room::encryption::RoomEncryptionEventContent},
};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const SECRET: &str = "only bob can read this";

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_message_is_decrypted_by_its_receiver_and_cross_signing_verifies_the_device()
-> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let bob = login(server.url(), BOB).await?;
    let room_id = invite_and_join(&alice, &bob, "hearth sdk encryption", SYNC_DEADLINE).await?;

    encrypt_room(&alice, &bob, &room_id).await?;
    bob_decrypts_alices_message(&alice, &bob, &room_id).await?;
    cross_signing_verifies_alices_device(&alice, &bob).await
}

/// Alice turns encryption on; both clients see the room as encrypted.
async fn encrypt_room(alice: &Client, bob: &Client, room_id: &OwnedRoomId) -> anyhow::Result<()> {
    let room = room_of(alice, room_id)?;
    room.send_state_event(RoomEncryptionEventContent::with_recommended_defaults())
        .await
        .context("PUT /_matrix/client/v3/rooms/{roomId}/state/m.room.encryption")?;
    for (name, client) in [(ALICE, alice), (BOB, bob)] {
        let room = room_of(client, room_id)?;
        sync_until(client, SYNC_DEADLINE, "the room's encryption", |_| {
            room.encryption_state().is_encrypted()
        })
        .await
        .with_context(|| format!("{name} never saw the room encrypted"))?;
    }
    Ok(())
}

/// Alice sends; bob's sync brings the message, encrypted on the wire and decrypted by his client.
async fn bob_decrypts_alices_message(
    alice: &Client,
    bob: &Client,
    room_id: &OwnedRoomId,
) -> anyhow::Result<()> {
    // Bob's keys are on the server before alice looks for them.
    sync_once(bob).await?;
    send_text(&room_of(alice, room_id)?, SECRET).await?;
    let mut seen = Vec::new();
    sync_until(bob, SYNC_DEADLINE, "alice's message, decrypted", |response| {
        let Some(room) = response.rooms.joined.get(room_id) else { return false };
        room.timeline.events.iter().any(|event| {
            let body = message_body(event);
            seen.push(format!("{body:?} encrypted: {}", event.encryption_info().is_some()));
            body.as_deref() == Some(SECRET) && event.encryption_info().is_some()
        })
    })
    .await
    .with_context(|| format!("bob's timeline events: {seen:?}"))
}

/// Alice bootstraps cross-signing; her device is verified for her, and bob sees it signed.
async fn cross_signing_verifies_alices_device(alice: &Client, bob: &Client) -> anyhow::Result<()> {
    let encryption = alice.encryption();
    encryption.bootstrap_cross_signing(None).await.context("bootstrapping cross-signing")?;
    let status = encryption.cross_signing_status().await.context("no cross-signing status")?;
    ensure!(status.is_complete(), "alice's cross-signing status: {status:?}");
    // Her client learns of the signature of her device from `/keys/query`, which it sends again
    // when her next sync names her among the users whose keys changed.
    let mut own = encryption.get_own_device().await?.context("alice has no own device")?;
    for _ in 0..10 {
        if own.is_cross_signed_by_owner() {
            break;
        }
        sync_once(alice).await?;
        own = encryption.get_own_device().await?.context("alice has no own device")?;
    }
    ensure!(own.is_cross_signed_by_owner(), "alice's device is not cross-signed");
    ensure!(own.is_verified(), "alice's device is not verified");

    let alice_id = own_user_id(alice)?;
    let identity = bob.encryption().request_user_identity(&alice_id).await?;
    ensure!(identity.is_some(), "bob sees no cross-signing identity of alice");
    let device_id = alice.device_id().context("alice has no device ID")?;
    // Bob's next syncs see alice's keys change and fetch them again.
    let mut signed = false;
    for _ in 0..10 {
        sync_once(bob).await?;
        let device = bob.encryption().get_device(&alice_id, device_id).await?;
        if device.is_some_and(|device| device.is_cross_signed_by_owner()) {
            signed = true;
            break;
        }
    }
    ensure!(signed, "bob never saw alice's device signed by her self-signing key");
    Ok(())
}
