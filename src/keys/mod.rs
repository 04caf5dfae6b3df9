//! End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and their
//! signatures, device-list changes, to-device messages, and the server-side key backup
//! ([`backup`]).
//!
//! This module checks what clients upload (that keys belong to the caller's user and device,
//! that their ed25519 signatures verify) and decides what others see; the store keeps the JSON as
//! accepted. Every change of a user's devices or keys takes a stream position (so that `/sync`
//! and `/keys/changes` can say whose keys changed) and is published on [`DEVICE_LIST_SUBJECT`];
//! a to-device message is published on [`TO_DEVICE_SUBJECT`]. Both wake long-polling syncs.
//! It never knows HTTP.
//!
//! FIXME: a device may upload any number of one-time keys; there is no cap per device yet.
//!
//! FIXME: there is no federation yet: keys of remote users cannot be queried or claimed (their
//! servers are reported in `failures`) and to-device messages to remote users are dropped.

pub mod backup;
mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod signatures;
pub mod to_device;

use std::collections::BTreeMap;

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId, UInt,
    UserId,
    encryption::{DeviceKeys, OneTimeKey},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

pub use self::cross_signing::{SignatureFailures, SigningKeys};
use self::signatures::{canonical, invalid_signature, verify};
use crate::{
    Error, Result,
    bus::Bus,
    store::{DeviceKeysRecord, OneTimeKeyRecord, Store},
};

/// The bus subject on which a user's device list (devices, device keys, cross-signing keys)
/// changes.
pub const DEVICE_LIST_SUBJECT: &str = "keyserver.output.device_list";

/// The bus subject on which a to-device message for a user is queued.
pub const TO_DEVICE_SUBJECT: &str = "keyserver.output.to_device";

/// What is published on [`DEVICE_LIST_SUBJECT`] and [`TO_DEVICE_SUBJECT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyOutput {
    pub user_id: OwnedUserId,
    pub stream_position: i64,
}

/// The one-time key algorithm clients use, the only one accepted.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// The most unclaimed one-time keys a device may hold: clients keep about fifty, and each is a
/// row that only a claim removes.
pub const MAX_ONE_TIME_KEYS: usize = 1_000;

/// The end-to-end encryption service. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    store: Store,
    bus: Bus,
    server_name: OwnedServerName,
}

/// What a query of keys finds, in the shape of `POST /keys/query`'s response.
#[derive(Default)]
pub struct QueriedKeys {
    pub failures: BTreeMap<String, JsonValue>,
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    pub master_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
    pub user_signing_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
}

/// Claimed keys: user → device → key ID → key, and the servers that could not be asked.
pub type ClaimedKeys = (
    BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>>>,
    BTreeMap<String, JsonValue>,
);

impl Keys {
    pub fn new(store: Store, bus: Bus, server_name: OwnedServerName) -> Self {
        Self { store, bus, server_name }
    }

    /// `POST /keys/upload`: stores the device's identity keys, one-time keys and fallback keys
    /// after checking them all, and returns the device's one-time key counts.
    pub async fn upload(
        &self,
        user_id: &UserId,
        device_id: &str,
        device_keys: Option<&Raw<DeviceKeys>>,
        one_time_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
        fallback_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let stored = self.stored_device_keys(user_id, device_id).await?;
        let new_keys = match device_keys {
            Some(raw) => Some(check_device_keys(user_id, device_id, raw, stored.as_ref())?),
            None => None,
        };
        let signing_key =
            new_keys.as_ref().or(stored.as_ref()).and_then(|k| ed25519_of(k, device_id));
        let one_time =
            check_one_time_keys(user_id, device_id, one_time_keys, signing_key.as_deref())?;
        let fallback =
            check_one_time_keys(user_id, device_id, fallback_keys, signing_key.as_deref())?;

        if let Some(keys) = new_keys.filter(|keys| Some(keys) != stored.as_ref()) {
            let position =
                self.store.set_device_keys(user_id, device_id, &keys.to_string()).await?;
            self.publish(DEVICE_LIST_SUBJECT, user_id, position).await;
        }
        if !one_time.is_empty() {
            self.check_one_time_key_room(user_id, device_id, one_time.len()).await?;
            let conflicts = self.store.add_one_time_keys(user_id, device_id, one_time).await?;
            if !conflicts.is_empty() {
                return Err(Error::invalid_param(format!(
                    "One-time key {} was uploaded before with other content",
                    conflicts.join(", ")
                )));
            }
        }
        if !fallback.is_empty() {
            self.store.set_fallback_keys(user_id, device_id, fallback).await?;
        }
        self.one_time_key_counts(user_id, device_id).await
    }

    /// Refuses an upload that would leave the device more than [`MAX_ONE_TIME_KEYS`] unclaimed.
    async fn check_one_time_key_room(
        &self,
        user_id: &UserId,
        device_id: &str,
        new: usize,
    ) -> Result<()> {
        let stored: u64 = self
            .store
            .one_time_key_counts(user_id, device_id)
            .await?
            .into_iter()
            .map(|c| c.1)
            .sum();
        let total = usize::try_from(stored).unwrap_or(usize::MAX).saturating_add(new);
        if total > MAX_ONE_TIME_KEYS {
            return Err(Error::invalid_param(format!(
                "A device may hold at most {MAX_ONE_TIME_KEYS} unclaimed one-time keys"
            )));
        }
        Ok(())
    }

    /// The device's unclaimed one-time keys per algorithm (`signed_curve25519` always named).
    pub async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
        for (algorithm, count) in self.store.one_time_key_counts(user_id, device_id).await? {
            let count = UInt::try_from(count).unwrap_or(UInt::MAX);
            counts.insert(OneTimeKeyAlgorithm::from(algorithm.as_str()), count);
        }
        Ok(counts)
    }

    /// The algorithms of the device's fallback keys not claimed yet.
    pub async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Vec<OneTimeKeyAlgorithm>> {
        let types = self.store.unused_fallback_key_types(user_id, device_id).await?;
        Ok(types.iter().map(|t| OneTimeKeyAlgorithm::from(t.as_str())).collect())
    }

    /// `POST /keys/query`: the device and cross-signing keys of the users asked for, as
    /// `requester` may see them.
    pub async fn query(
        &self,
        requester: &UserId,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys> {
        let mut found = QueriedKeys::default();
        for (user_id, device_ids) in users {
            if user_id.server_name() != self.server_name {
                found.failures.insert(
                    user_id.server_name().to_string(),
                    JsonValue::Object(Default::default()),
                );
                continue;
            }
            let devices = self.queried_devices(user_id, device_ids).await?;
            found.device_keys.insert(user_id.clone(), devices);
            self.queried_cross_signing_keys(requester, user_id, &mut found).await?;
        }
        Ok(found)
    }

    /// `POST /keys/claim`: one key per device asked for, a one-time key while there are any,
    /// else the fallback key.
    pub async fn claim(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<ClaimedKeys> {
        let (mut claimed, mut failures) = (BTreeMap::new(), BTreeMap::new());
        for (user_id, devices) in wanted {
            if user_id.server_name() != self.server_name {
                failures.insert(
                    user_id.server_name().to_string(),
                    JsonValue::Object(Default::default()),
                );
                continue;
            }
            let mut of_user = BTreeMap::new();
            for (device_id, algorithm) in devices {
                let key =
                    self.store.claim_key(user_id, device_id.as_str(), algorithm.as_str()).await?;
                if let Some(key) = key {
                    of_user.insert(device_id.clone(), claimed_key(key)?);
                }
            }
            claimed.insert(user_id.clone(), of_user);
        }
        Ok((claimed, failures))
    }

    async fn stored_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Option<JsonValue>> {
        let devices = self.store.device_keys(user_id).await?;
        let Some(record) = devices.into_iter().find(|d| d.device_id == device_id) else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_str(&record.key_json).map_err(anyhow::Error::from)?))
    }

    /// The device keys of a user (of the devices asked for, all when none is named), with the
    /// signatures uploaded for them and their display names.
    async fn queried_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>> {
        let signatures = self.store.key_signatures(user_id).await?;
        let mut devices = BTreeMap::new();
        for record in self.store.device_keys(user_id).await? {
            if !device_ids.is_empty() && !device_ids.iter().any(|d| d.as_str() == record.device_id)
            {
                continue;
            }
            let mut keys = shown_device_keys(&record)?;
            for signature in signatures
                .iter()
                .filter(|s| s.target_key_id == record.device_id && s.signer_user_id == user_id)
            {
                add_signature(&mut keys, signature);
            }
            devices.insert(OwnedDeviceId::from(record.device_id.as_str()), raw(&keys)?);
        }
        Ok(devices)
    }

    async fn publish(&self, subject: &str, user_id: &UserId, stream_position: i64) {
        let output = KeyOutput { user_id: user_id.to_owned(), stream_position };
        if let Err(error) = self.bus.publish(subject, &output).await {
            // Stored already: the next sync of whoever it concerns shows it anyway.
            tracing::warn!(error = format!("{error:#}"), subject, "cannot publish a key change");
        }
    }
}

/// The ed25519 public key of the device in its device keys.
fn ed25519_of(keys: &JsonValue, device_id: &str) -> Option<String> {
    keys["keys"][format!("ed25519:{device_id}")].as_str().map(str::to_owned)
}

/// Checks uploaded device keys: the caller's user and device, both identity keys, a valid
/// self-signature, and the same identity keys as before for a known device. Returns them as
/// they are to be stored (without `unsigned`).
fn check_device_keys(
    user_id: &UserId,
    device_id: &str,
    raw_keys: &Raw<DeviceKeys>,
    stored: Option<&JsonValue>,
) -> Result<JsonValue> {
    let keys: DeviceKeys = raw_keys
        .deserialize()
        .map_err(|e| Error::bad_json(format!("device_keys is not a device keys object: {e}")))?;
    if keys.user_id != user_id || keys.device_id.as_str() != device_id {
        return Err(Error::invalid_param(
            "device_keys must be the keys of your own user and device",
        ));
    }
    let mut json: JsonValue =
        serde_json::from_str(raw_keys.json().get()).map_err(anyhow::Error::from)?;
    if let Some(object) = json.as_object_mut() {
        object.remove("unsigned");
    }
    let (ed25519, curve25519) = (format!("ed25519:{device_id}"), format!("curve25519:{device_id}"));
    let Some(public_key) = json["keys"][&ed25519].as_str() else {
        return Err(Error::invalid_param(format!("device_keys has no {ed25519} key")));
    };
    if json["keys"][&curve25519].as_str().is_none() {
        return Err(Error::invalid_param(format!("device_keys has no {curve25519} key")));
    }
    let object = canonical(&json.to_string())?;
    verify(&object, user_id.as_str(), &ed25519, public_key).map_err(invalid_signature)?;
    if let Some(stored) = stored {
        for key_id in [&ed25519, &curve25519] {
            if stored["keys"][key_id] != json["keys"][key_id] {
                return Err(Error::invalid_param(format!(
                    "This device has other identity keys already ({key_id}); log in as a new \
                     device to use new ones"
                )));
            }
        }
    }
    Ok(json)
}

/// Checks one-time or fallback keys: a known algorithm, a signed key object, and (when the
/// device's ed25519 key is known) a valid signature by the device.
fn check_one_time_keys(
    user_id: &UserId,
    device_id: &str,
    keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    signing_key: Option<&str>,
) -> Result<Vec<OneTimeKeyRecord>> {
    let mut checked = Vec::new();
    for (key_id, raw_key) in keys {
        Error::check_no_nul("A key ID", key_id.as_str())?;
        let algorithm = key_id.algorithm();
        if algorithm.as_str() != SIGNED_CURVE25519 {
            return Err(Error::invalid_param(format!(
                "Unknown one-time key algorithm {:?}: use signed_curve25519",
                algorithm.as_str()
            )));
        }
        let json: JsonValue =
            serde_json::from_str(raw_key.json().get()).map_err(anyhow::Error::from)?;
        if !json["key"].is_string() || !json["signatures"].is_object() {
            return Err(Error::bad_json(format!("{key_id} is not a signed key object")));
        }
        if let Some(public_key) = signing_key {
            let object = canonical(&json.to_string())?;
            verify(&object, user_id.as_str(), &format!("ed25519:{device_id}"), public_key)
                .map_err(|why| invalid_signature(format!("{key_id}: {why}")))?;
        }
        checked.push(OneTimeKeyRecord {
            algorithm: algorithm.to_string(),
            key_id: key_id.to_string(),
            key_json: json.to_string(),
        });
    }
    Ok(checked)
}

/// A device's keys as others see them: with its display name in `unsigned`.
fn shown_device_keys(record: &DeviceKeysRecord) -> Result<JsonValue> {
    let mut keys: JsonValue =
        serde_json::from_str(&record.key_json).map_err(anyhow::Error::from)?;
    if let Some(name) = &record.display_name {
        keys["unsigned"] = serde_json::json!({ "device_display_name": name });
    }
    Ok(keys)
}

/// Adds an uploaded signature to the signed object's `signatures`.
fn add_signature(object: &mut JsonValue, signature: &crate::store::KeySignature) {
    let signatures = &mut object["signatures"];
    if !signatures.is_object() {
        *signatures = serde_json::json!({});
    }
    let by_signer = &mut signatures[signature.signer_user_id.as_str()];
    if !by_signer.is_object() {
        *by_signer = serde_json::json!({});
    }
    by_signer[&signature.signer_key_id] = JsonValue::String(signature.signature.clone());
}

fn claimed_key(key: OneTimeKeyRecord) -> Result<BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>> {
    let key_id = OwnedOneTimeKeyId::try_from(key.key_id.as_str())
        .map_err(|e| anyhow::anyhow!("stored one-time key ID does not parse: {e}"))?;
    let json =
        serde_json::value::RawValue::from_string(key.key_json).map_err(anyhow::Error::from)?;
    Ok(BTreeMap::from([(key_id, Raw::from_json(json))]))
}

fn raw<T>(value: &JsonValue) -> Result<Raw<T>> {
    let json = serde_json::value::to_raw_value(value).map_err(anyhow::Error::from)?;
    Ok(Raw::from_json(json))
}
