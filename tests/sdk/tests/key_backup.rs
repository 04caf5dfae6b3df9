//! Server-side key backup, restored on a new device, through `matrix-sdk` on the real `hearth`
//! binary (named by `HEARTH_BIN`):
//!
//! 1. alice's first device bootstraps cross-signing and enables recovery: her client creates a
//!    key backup version (`/room_keys/version`) and secret storage (account data) holding the
//!    private cross-signing keys and the backup key, and gets a recovery key;
//! 2. alice and bob talk in an encrypted room; alice's first device backs up the room keys of
//!    both sides (`/room_keys/keys`), and the backup version counts those two;
//! 3. alice logs in on a second device, which cannot read the earlier messages; it recovers with
//!    the recovery key (secrets from secret storage, the backup key among them), downloads the
//!    room's keys from the backup and decrypts both messages from `/messages`.
//!
//! The first device never syncs after the second logs in, so no key can reach the second one
//! by forwarding: the backup is its only source.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use hearth_sdk_tests::{
    client::{
        invite_and_join, login, message_body, register, room_of, send_text, sync_once, sync_until,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::{
    Client, Room,
    deserialized_responses::TimelineEvent,
    encryption::{backups::BackupState, recovery::RecoveryState},
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, UInt, api::client::backup::get_latest_backup_info,
        events::room::encryption::RoomEncryptionEventContent,
    },
};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const FROM_ALICE: &str = "alice's message, backed up by her first device";
const FROM_BOB: &str = "bob's message, backed up by alice's first device";

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// How long a backup upload or download may take.
const BACKUP_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_recovers_with_the_recovery_key_and_decrypts_history_from_the_backup()
-> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let bob = login(server.url(), BOB).await?;

    sync_once(&alice).await?;
    let recovery_key = enable_recovery(&alice).await?;
    let room_id = invite_and_join(&alice, &bob, "hearth sdk key backup", SYNC_DEADLINE).await?;
    encrypt_room(&alice, &bob, &room_id).await?;
    converse(&alice, &bob, &room_id).await?;
    wait_for_backup_upload(&alice).await?;
    backup_counts_keys(&alice, 2).await?;

    let second = login(server.url(), ALICE).await?;
    sync_once(&second).await?;
    let before = decrypted_bodies(&room_of(&second, &room_id)?).await?;
    ensure!(before.is_empty(), "the second device decrypted {before:?} before recovering");
    recover(&second, &recovery_key).await?;
    restore_room_keys(&second, &room_id).await?;

    let after = decrypted_bodies(&room_of(&second, &room_id)?).await?;
    ensure!(
        after.contains(&FROM_ALICE.to_owned()) && after.contains(&FROM_BOB.to_owned()),
        "the second device decrypted {after:?} from the backup"
    );
    Ok(())
}

/// Bootstraps cross-signing (recovery keeps its private keys in secret storage, but does not
/// create them), enables recovery on `client` and returns the recovery key; backup and recovery
/// are then on.
async fn enable_recovery(client: &Client) -> anyhow::Result<String> {
    let encryption = client.encryption();
    encryption
        .bootstrap_cross_signing_if_needed(None)
        .await
        .context("bootstrapping cross-signing")?;
    let recovery_key = encryption
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .context("enabling recovery (cross-signing, key backup, secret storage)")?;
    ensure!(
        encryption.backups().state() == BackupState::Enabled,
        "the backup state after enabling recovery: {:?}",
        encryption.backups().state()
    );
    let state = encryption.recovery().state();
    ensure!(state == RecoveryState::Enabled, "the recovery state after enabling it: {state:?}");
    Ok(recovery_key)
}

/// Alice turns encryption on; both clients see the room as encrypted.
async fn encrypt_room(alice: &Client, bob: &Client, room_id: &OwnedRoomId) -> anyhow::Result<()> {
    room_of(alice, room_id)?
        .send_state_event(RoomEncryptionEventContent::with_recommended_defaults())
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

/// Alice sends, then bob; each decrypts the other's message, so alice's first device holds the
/// room keys of both (her own outbound session and bob's, received as a to-device message).
async fn converse(alice: &Client, bob: &Client, room_id: &OwnedRoomId) -> anyhow::Result<()> {
    sync_once(bob).await?;
    send_text(&room_of(alice, room_id)?, FROM_ALICE).await?;
    decrypts(bob, room_id, FROM_ALICE).await.context("bob decrypting alice's message")?;
    sync_once(alice).await?;
    send_text(&room_of(bob, room_id)?, FROM_BOB).await?;
    decrypts(alice, room_id, FROM_BOB).await.context("alice decrypting bob's message")
}

/// `client`'s syncs bring `body`, encrypted on the wire and decrypted by the client.
async fn decrypts(client: &Client, room_id: &OwnedRoomId, body: &str) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    sync_until(client, SYNC_DEADLINE, "the message, decrypted", |response| {
        let Some(room) = response.rooms.joined.get(room_id) else { return false };
        room.timeline.events.iter().any(|event| {
            let text = message_body(event);
            seen.push(format!("{text:?} encrypted: {}", event.encryption_info().is_some()));
            text.as_deref() == Some(body) && event.encryption_info().is_some()
        })
    })
    .await
    .with_context(|| format!("the timeline events: {seen:?}"))
}

/// Waits until `client` has uploaded every room key it holds to the backup.
async fn wait_for_backup_upload(client: &Client) -> anyhow::Result<()> {
    tokio::time::timeout(BACKUP_DEADLINE, client.encryption().backups().wait_for_steady_state())
        .await
        .with_context(|| format!("the backup upload did not finish within {BACKUP_DEADLINE:?}"))?
        .context("uploading room keys to the backup (PUT /_matrix/client/v3/room_keys/keys)")
}

/// The server's latest backup version counts `expected` keys (here alice's own Megolm session
/// and bob's).
async fn backup_counts_keys(client: &Client, expected: u32) -> anyhow::Result<()> {
    let request = get_latest_backup_info::v3::Request::new();
    let info = client.send(request).await.context("GET /_matrix/client/v3/room_keys/version")?;
    ensure!(info.count == UInt::from(expected), "the backup counts {} keys", info.count);
    Ok(())
}

/// Recovers the second device's secrets from secret storage with the recovery key.
async fn recover(client: &Client, recovery_key: &str) -> anyhow::Result<()> {
    let recovery = client.encryption().recovery();
    recovery.recover(recovery_key).await.context("recovering with the recovery key")?;
    ensure!(
        recovery.state() == RecoveryState::Enabled,
        "the recovery state after recovering: {:?}",
        recovery.state()
    );
    let backups = client.encryption().backups();
    ensure!(
        backups.are_enabled().await,
        "the backup is not enabled after recovering (state {:?})",
        backups.state()
    );
    Ok(())
}

/// Downloads every room key of `room_id` from the backup
/// (`GET /_matrix/client/v3/room_keys/keys/{roomId}`).
async fn restore_room_keys(client: &Client, room_id: &OwnedRoomId) -> anyhow::Result<()> {
    let backups = client.encryption().backups();
    tokio::time::timeout(BACKUP_DEADLINE, backups.download_room_keys_for_room(room_id))
        .await
        .with_context(|| format!("the download did not finish within {BACKUP_DEADLINE:?}"))?
        .context("downloading the room's keys from the backup")
}

/// The bodies of the room's messages that `/messages` brings encrypted and the client decrypts,
/// newest first.
async fn decrypted_bodies(room: &Room) -> anyhow::Result<Vec<String>> {
    let mut options = MessagesOptions::backward();
    options.limit = UInt::from(100_u32);
    let page = room.messages(options).await.with_context(|| {
        format!("GET /_matrix/client/v3/rooms/{}/messages?dir=b", room.room_id())
    })?;
    Ok(page.chunk.iter().filter(is_decrypted).filter_map(message_body).collect())
}

/// Whether `event` came encrypted and was decrypted.
fn is_decrypted(event: &&TimelineEvent) -> bool {
    event.encryption_info().is_some()
}
