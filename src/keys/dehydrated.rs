//! Dehydrated devices (MSC3814, as Element uses them): a device a client parks on the server,
//! encrypted with a key only the user holds, so that to-device messages (room keys) sent while
//! all the user's devices are offline can be picked up by their next new device.
//!
//! The dehydrated device is an ordinary device without an access token: its keys, its one-time
//! keys and its to-device inbox are stored as any device's. A user has at most one; putting a new
//! one deletes the old one. Its messages are read with `next_batch` tokens (the stream position
//! of the last message read, `s<n>`); reading past a token deletes what it covered.

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, UInt, UserId,
    encryption::{DeviceKeys, OneTimeKey},
    events::AnyToDeviceEvent,
    serde::Raw,
};
use std::collections::BTreeMap;

use super::{DEVICE_LIST_SUBJECT, Keys, raw, to_device::MAX_TO_DEVICE_PER_SYNC};
use crate::{
    Error, Result,
    sync::{parse_token, token},
};

/// A dehydrated device as a client puts it.
pub struct NewDehydratedDevice<'a> {
    pub device_id: &'a str,
    pub display_name: Option<&'a str>,
    /// The client's encrypted pickle of the device, as JSON.
    pub device_data: &'a str,
    pub device_keys: &'a Raw<DeviceKeys>,
    pub one_time_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// A page of a dehydrated device's to-device messages.
pub struct DehydratedEvents {
    pub events: Vec<Raw<AnyToDeviceEvent>>,
    pub next_batch: Option<String>,
}

impl Keys {
    /// Stores the user's dehydrated device with its keys, replacing the one before.
    pub async fn put_dehydrated_device(
        &self,
        user_id: &UserId,
        device: NewDehydratedDevice<'_>,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let current = self.store.dehydrated_device(user_id).await?;
        let is_dehydrated = current.as_ref().is_some_and(|(id, _)| id == device.device_id);
        if !is_dehydrated && self.store.device(user_id, device.device_id).await?.is_some() {
            return Err(Error::invalid_param("A device of yours already has this ID"));
        }
        let (id, name, data) = (device.device_id, device.display_name, device.device_data);
        // Checked before anything changes, so that a refused upload keeps the device before it.
        let keys = super::check_device_keys(user_id, id, device.device_keys, None)?;
        let signing_key = super::ed25519_of(&keys, id);
        super::check_one_time_keys(user_id, id, device.one_time_keys, signing_key.as_deref())?;
        super::check_one_time_keys(user_id, id, device.fallback_keys, signing_key.as_deref())?;
        self.store.set_dehydrated_device(user_id, id, name, data).await?;
        let uploaded = self
            .upload(
                user_id,
                id,
                Some(device.device_keys),
                device.one_time_keys,
                device.fallback_keys,
            )
            .await;
        if uploaded.is_err() {
            // A device whose keys were refused is no dehydrated device.
            self.store.delete_devices(user_id, &[id.to_owned()]).await?;
        }
        let position = self.store.mark_device_list_changed(user_id).await?;
        self.publish(DEVICE_LIST_SUBJECT, user_id, position).await;
        uploaded
    }

    /// The user's dehydrated device: its ID and data. `M_NOT_FOUND` without one.
    pub async fn dehydrated_device(&self, user_id: &UserId) -> Result<(OwnedDeviceId, String)> {
        let (device_id, data) = self
            .store
            .dehydrated_device(user_id)
            .await?
            .ok_or_else(|| Error::not_found("No dehydrated device"))?;
        Ok((device_id.into(), data))
    }

    /// Deletes the user's dehydrated device with its keys and inbox; returns its ID.
    pub async fn delete_dehydrated_device(&self, user_id: &UserId) -> Result<OwnedDeviceId> {
        let (device_id, _) = self.dehydrated_device(user_id).await?;
        self.store.delete_devices(user_id, &[device_id.to_string()]).await?;
        let position = self.store.mark_device_list_changed(user_id).await?;
        self.publish(DEVICE_LIST_SUBJECT, user_id, position).await;
        Ok(device_id)
    }

    /// The dehydrated device's to-device messages after `next_batch`, deleting those it covers.
    pub async fn dehydrated_events(
        &self,
        user_id: &UserId,
        device_id: &str,
        next_batch: Option<&str>,
    ) -> Result<DehydratedEvents> {
        let (dehydrated, _) = self.dehydrated_device(user_id).await?;
        if dehydrated.as_str() != device_id {
            return Err(Error::not_found("This is not your dehydrated device"));
        }
        let current = self.store.current_position().await?;
        // A token from beyond the stream acknowledges nothing (see `to_device_for_sync`).
        let after = next_batch.map(parse_token).transpose()?.filter(|&after| after <= current);
        if let Some(after) = after {
            self.acknowledge(user_id, device_id, after).await?;
        }
        let messages = self
            .store
            .to_device_messages(
                user_id,
                device_id,
                after.unwrap_or(0),
                current,
                MAX_TO_DEVICE_PER_SYNC,
            )
            .await?;
        let next_batch =
            messages.last().map(|m| token(m.stream_position)).or(next_batch.map(str::to_owned));
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            let content: serde_json::Value =
                serde_json::from_str(&message.content).map_err(anyhow::Error::from)?;
            let event = serde_json::json!({ "type": message.event_type, "sender": message.sender, "content": content });
            events.push(raw(&event)?);
        }
        Ok(DehydratedEvents { events, next_batch })
    }
}
