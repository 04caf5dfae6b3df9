//! Push notifications as a real client sees them, between two `matrix-sdk` clients on the real
//! `hearth` binary (named by `HEARTH_BIN`):
//!
//! 1. bob's initial sync brings his push rules (`m.push_rules` account data), which the SDK
//!    keeps;
//! 2. alice sends two messages and one that mentions bob; bob's room shows three unread
//!    notifications, one of them highlighted (the SDK reads `unread_notifications` from `/sync`);
//! 3. bob sends a read receipt for the last one; his counts go back to zero in his next syncs.

use std::time::Duration;

use anyhow::Context as _;
use hearth_sdk_tests::{
    client::{
        invite_and_join, login, own_user_id, register, room_of, send_text, sync_until_stored,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::ruma::{
    api::client::receipt::create_receipt::v3::ReceiptType,
    events::{
        Mentions, push_rules::PushRulesEventContent, receipt::ReceiptThread,
        room::message::RoomMessageEventContent,
    },
};

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn unread_counts_follow_messages_mentions_and_receipts() -> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), "alice").await?;
    register(server.url(), "bob").await?;
    let alice = login(server.url(), "alice").await?;
    let bob = login(server.url(), "bob").await?;
    let room_id = invite_and_join(&alice, &bob, "hearth sdk push", SYNC_DEADLINE).await?;
    let rules = bob.account().account_data::<PushRulesEventContent>().await?;
    let rules = rules.context("bob's initial sync brought no m.push_rules")?.deserialize()?;
    anyhow::ensure!(
        rules.global.override_.iter().any(|rule| rule.rule_id == ".m.rule.master"),
        "the default rules"
    );

    let alice_room = room_of(&alice, &room_id)?;
    send_text(&alice_room, "one").await?;
    send_text(&alice_room, "two").await?;
    let bob_id = own_user_id(&bob)?;
    let mention = RoomMessageEventContent::text_plain("bob, three")
        .add_mentions(Mentions::with_user_ids([bob_id]));
    let last = alice_room.send(mention).await.context("send the mention")?.response.event_id;

    let bob_room = room_of(&bob, &room_id)?;
    sync_until_stored(&bob, SYNC_DEADLINE, "three notifications, one highlighted", async || {
        let counts = bob_room.unread_notification_counts();
        Ok(counts.notification_count == 3 && counts.highlight_count == 1)
    })
    .await?;

    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, last)
        .await
        .context("POST /receipt/m.read")?;
    sync_until_stored(&bob, SYNC_DEADLINE, "no unread notifications", async || {
        let counts = bob_room.unread_notification_counts();
        Ok(counts.notification_count == 0 && counts.highlight_count == 0)
    })
    .await?;
    Ok(())
}
