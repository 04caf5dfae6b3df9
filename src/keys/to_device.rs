//! To-device messages: `PUT /sendToDevice/{eventType}/{txnId}` queues them, `/sync` delivers
//! them to their device.
//!
//! Each message takes a stream position of its own. A sync delivers at most
//! [`MAX_TO_DEVICE_PER_SYNC`] of them and names the last one delivered in its token; the device's
//! next sync with that token acknowledges them, and only then are they deleted, so a message
//! is delivered at least once even when a response is lost.

use std::collections::BTreeMap;

use ruma::{
    OwnedUserId, UserId, events::AnyToDeviceEvent, serde::Raw, to_device::DeviceIdOrAllDevices,
};
use serde_json::value::RawValue;

use super::{Keys, TO_DEVICE_SUBJECT, raw};
use crate::{
    Error, Result,
    store::{NewToDevice, ToDeviceTxn},
};

/// The most to-device messages one sync delivers; a fuller inbox pages over several syncs.
pub const MAX_TO_DEVICE_PER_SYNC: usize = 100;

/// The largest content of one to-device message, in bytes of JSON.
pub const MAX_TO_DEVICE_CONTENT: usize = 64 * 1024;

/// The messages of one `sendToDevice` request: user → device (or all) → content.
pub type Messages = BTreeMap<
    OwnedUserId,
    BTreeMap<DeviceIdOrAllDevices, Raw<ruma::events::AnyToDeviceEventContent>>,
>;

/// What a sync delivers: the events, and the position its token acknowledges next time.
pub struct ToDeviceBatch {
    pub events: Vec<Raw<AnyToDeviceEvent>>,
    pub next_position: i64,
}

impl Keys {
    /// Queues the messages of one transaction of the sending device; a transaction sent again
    /// changes nothing. Messages to devices that do not exist are dropped, as are those to remote
    /// users (FIXME: no federation yet).
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &Messages,
    ) -> Result<()> {
        let mut queued = Vec::new();
        for (user_id, devices) in messages {
            for (target, content) in devices {
                let content = checked_content(content.json())?;
                if user_id.server_name() != self.server_name {
                    continue;
                }
                let device_id = match target {
                    DeviceIdOrAllDevices::DeviceId(device_id) => device_id.to_string(),
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                };
                let (user_id, event_type) = (user_id.clone(), event_type.to_owned());
                queued.push(NewToDevice { user_id, device_id, event_type, content });
            }
        }
        let txn = ToDeviceTxn {
            sender: sender.to_owned(),
            sender_device: sender_device.to_owned(),
            txn_id: txn_id.to_owned(),
        };
        let Some(recipients) = self.store.send_to_device(txn, queued).await? else {
            return Ok(());
        };
        for (user_id, position) in recipients {
            self.publish(TO_DEVICE_SUBJECT, &user_id, position).await;
        }
        Ok(())
    }

    /// The device's messages after `after` up to `current`, once those up to `acknowledged`
    /// (the position the sync's token names, if it has one) are deleted.
    pub async fn to_device_for_sync(
        &self,
        user_id: &UserId,
        device_id: &str,
        acknowledged: Option<i64>,
        current: i64,
    ) -> Result<ToDeviceBatch> {
        // A token from beyond the stream (a restored database, a client's bug) acknowledges
        // nothing: it cannot name messages that were delivered.
        let acknowledged = acknowledged.filter(|&position| position <= current);
        let after = acknowledged.unwrap_or(0);
        if let Some(acknowledged) = acknowledged {
            self.acknowledge(user_id, device_id, acknowledged).await?;
        }
        let messages = self
            .store
            .to_device_messages(user_id, device_id, after, current, MAX_TO_DEVICE_PER_SYNC)
            .await?;
        let next_position = match messages.last() {
            Some(last) if messages.len() == MAX_TO_DEVICE_PER_SYNC => last.stream_position,
            _ => current,
        };
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            let content: serde_json::Value =
                serde_json::from_str(&message.content).map_err(anyhow::Error::from)?;
            let event = serde_json::json!({
                "type": message.event_type,
                "sender": message.sender,
                "content": content,
            });
            events.push(raw(&event)?);
        }
        Ok(ToDeviceBatch { events, next_position })
    }
}

impl Keys {
    /// Deletes the device's messages up to `acknowledged`. Most syncs acknowledge nothing new:
    /// a read finds that, so that they queue no write for the store's one writer.
    pub(super) async fn acknowledge(
        &self,
        user_id: &UserId,
        device_id: &str,
        acknowledged: i64,
    ) -> Result<()> {
        let delivered =
            self.store.to_device_messages(user_id, device_id, 0, acknowledged, 1).await?;
        if !delivered.is_empty() {
            self.store.delete_to_device_messages(user_id, device_id, acknowledged).await?;
        }
        Ok(())
    }
}

/// A message's content: a JSON object no larger than [`MAX_TO_DEVICE_CONTENT`].
fn checked_content(content: &RawValue) -> Result<String> {
    let text = content.get();
    if text.len() > MAX_TO_DEVICE_CONTENT {
        return Err(Error::too_large(format!(
            "A to-device message is larger than {MAX_TO_DEVICE_CONTENT} bytes"
        )));
    }
    if !text.trim_start().starts_with('{') {
        return Err(Error::bad_json("A to-device message's content must be a JSON object"));
    }
    Ok(text.to_owned())
}
