//! The storage API of end-to-end encryption: device keys, one-time and fallback keys,
//! cross-signing keys and the signatures uploaded for them, device-list changes and to-device
//! messages. Keys are kept as the JSON the client uploaded; checking them is `crate::keys`'s job.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};

use super::StoreResult;

/// A device's uploaded identity keys, with the device's display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKeysRecord {
    pub device_id: String,
    pub display_name: Option<String>,
    /// The `DeviceKeys` object as uploaded.
    pub key_json: String,
}

/// A one-time or fallback key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeKeyRecord {
    /// e.g. `signed_curve25519`.
    pub algorithm: String,
    /// The whole key ID, `<algorithm>:<key name>`.
    pub key_id: String,
    pub key_json: String,
}

/// A signature uploaded for a device key (target: the device ID) or a master key (target: its
/// public key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySignature {
    pub target_user_id: OwnedUserId,
    pub target_key_id: String,
    pub signer_user_id: OwnedUserId,
    /// e.g. `ed25519:<public key>` or `ed25519:<device ID>`.
    pub signer_key_id: String,
    pub signature: String,
}

/// A to-device message to send: `device_id` `*` means every device of the user.
#[derive(Clone, Debug)]
pub struct NewToDevice {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub event_type: String,
    /// The event content as JSON.
    pub content: String,
}

/// The sending device's transaction: one send per transaction ID.
#[derive(Clone, Debug)]
pub struct ToDeviceTxn {
    pub sender: OwnedUserId,
    pub sender_device: String,
    pub txn_id: String,
}

/// A to-device message waiting in a device's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToDeviceRecord {
    pub stream_position: i64,
    pub sender: OwnedUserId,
    pub event_type: String,
    pub content: String,
}

/// The key types of [`KeyStore::set_cross_signing_keys`].
pub const MASTER_KEY: &str = "master";
pub const SELF_SIGNING_KEY: &str = "self_signing";
pub const USER_SIGNING_KEY: &str = "user_signing";

/// End-to-end encryption keys and to-device messages.
#[async_trait]
pub trait KeyStore {
    /// Stores a device's identity keys and records a change of its user's device list; returns
    /// the stream position of the change.
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        key_json: &str,
    ) -> StoreResult<i64>;
    /// The devices of a user that uploaded identity keys, by device ID.
    async fn device_keys(&self, user_id: &UserId) -> StoreResult<Vec<DeviceKeysRecord>>;

    /// Adds one-time keys. A key ID stored already with the same JSON is skipped; one stored
    /// with other JSON is a conflict: then nothing is written and the conflicting IDs come back.
    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<Vec<String>>;
    /// Replaces the device's fallback key of each key's algorithm (the same key uploaded again
    /// keeps its `used` mark).
    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<()>;
    /// How many unclaimed one-time keys the device has, per algorithm.
    async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<BTreeMap<String, u64>>;
    /// The algorithms of the device's fallback keys that were not claimed yet.
    async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<Vec<String>>;
    /// Claims one one-time key of the algorithm (deleting it), or else the fallback key (marking
    /// it used).
    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &str,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKeyRecord>>;

    /// Stores cross-signing keys (key type → JSON) and records a change of the user's device
    /// list; returns its stream position.
    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: BTreeMap<String, String>,
    ) -> StoreResult<i64>;
    /// The user's cross-signing keys, key type → JSON.
    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<BTreeMap<String, String>>;
    /// Stores signatures (replacing one by the same signer key) and records a device-list
    /// change of each user in `changed`; returns the stream position of the last change.
    async fn add_key_signatures(
        &self,
        signatures: Vec<KeySignature>,
        changed: Vec<OwnedUserId>,
    ) -> StoreResult<i64>;
    /// The signatures uploaded for the keys of a user.
    async fn key_signatures(&self, target_user_id: &UserId) -> StoreResult<Vec<KeySignature>>;

    /// Records a change of the user's device list; returns its stream position.
    async fn mark_device_list_changed(&self, user_id: &UserId) -> StoreResult<i64>;
    /// The users whose latest device-list change is after `after`, with its position.
    async fn device_list_changes(&self, after: i64) -> StoreResult<Vec<(OwnedUserId, i64)>>;

    /// Queues to-device messages, each at a stream position of its own, unless the transaction
    /// was seen before (then `None`). A device that does not exist gets nothing. Returns each
    /// recipient with the position of its last message.
    async fn send_to_device(
        &self,
        txn: ToDeviceTxn,
        messages: Vec<NewToDevice>,
    ) -> StoreResult<Option<BTreeMap<OwnedUserId, i64>>>;
    /// A device's messages in `(after, upto]`, oldest first, at most `limit`.
    async fn to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<ToDeviceRecord>>;
    /// Deletes a device's messages up to and including `upto` (they were delivered).
    async fn delete_to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        upto: i64,
    ) -> StoreResult<()>;

    /// Makes `device_id` the user's dehydrated device with `device_data`, creating its device
    /// (without an access token). A previous dehydrated device of another ID is deleted with its
    /// keys and inbox; its ID comes back.
    async fn set_dehydrated_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &str,
    ) -> StoreResult<Option<String>>;
    /// The user's dehydrated device: its device ID and data.
    async fn dehydrated_device(&self, user_id: &UserId) -> StoreResult<Option<(String, String)>>;
}
