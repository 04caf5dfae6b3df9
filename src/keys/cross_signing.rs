//! Cross-signing: a user's master, self-signing and user-signing keys
//! (`POST /keys/device_signing/upload`), the signatures made with them and with devices
//! (`POST /keys/signatures/upload`), and how they are shown in `POST /keys/query`.
//!
//! The self-signing and user-signing keys must be signed by the master key. A signature uploaded
//! later is checked against the key that made it and kept apart from the signed key, so that the
//! signatures one user makes of another's master key are shown to the signer alone.

use std::collections::BTreeMap;

use ruma::{
    OwnedUserId, UserId,
    api::client::keys::upload_signatures::v3::{Failure, SignedKeys},
    encryption::{CrossSigningKey, KeyUsage},
    serde::Raw,
};
use serde_json::{Value as JsonValue, value::RawValue};

use super::{
    Keys, QueriedKeys, add_signature, ed25519_of, raw,
    signatures::{canonical, invalid_signature, verify},
};
use crate::{
    Error, Result,
    store::{KeySignature, MASTER_KEY, SELF_SIGNING_KEY, USER_SIGNING_KEY},
};

/// The cross-signing keys of one upload, any of them absent.
pub struct SigningKeys<'a> {
    pub master: Option<&'a Raw<CrossSigningKey>>,
    pub self_signing: Option<&'a Raw<CrossSigningKey>>,
    pub user_signing: Option<&'a Raw<CrossSigningKey>>,
}

/// Per user and key ID, why a signature was refused.
pub type SignatureFailures = BTreeMap<OwnedUserId, BTreeMap<String, Failure>>;

/// Checked cross-signing keys, key type → JSON, ready to store.
pub struct CheckedSigningKeys {
    keys: BTreeMap<String, String>,
    /// Whether they replace keys stored before (which needs the user's password).
    pub replaces: bool,
}

impl Keys {
    /// Checks an upload of cross-signing keys against the stored ones: the caller's user, the
    /// right usage, one public key each, and self-signing and user-signing keys signed by the
    /// master key (the uploaded or the stored one).
    pub async fn check_signing_keys(
        &self,
        user_id: &UserId,
        upload: &SigningKeys<'_>,
    ) -> Result<CheckedSigningKeys> {
        let stored = self.store.cross_signing_keys(user_id).await?;
        let uploaded = [
            (MASTER_KEY, KeyUsage::Master, upload.master),
            (SELF_SIGNING_KEY, KeyUsage::SelfSigning, upload.self_signing),
            (USER_SIGNING_KEY, KeyUsage::UserSigning, upload.user_signing),
        ];
        let mut checked = BTreeMap::new();
        for (key_type, usage, raw_key) in uploaded {
            if let Some(raw_key) = raw_key {
                checked.insert(
                    key_type.to_owned(),
                    check_signing_key(user_id, key_type, usage, raw_key)?,
                );
            }
        }
        let master = match checked.get(MASTER_KEY).or(stored.get(MASTER_KEY)) {
            Some(json) => public_key(&serde_json::from_str(json).map_err(anyhow::Error::from)?)?,
            None if checked.is_empty() => return Err(Error::missing_param("No keys to upload")),
            None => return Err(Error::invalid_param("Upload a master key first")),
        };
        for key_type in [SELF_SIGNING_KEY, USER_SIGNING_KEY] {
            if let Some(json) = checked.get(key_type) {
                verify(&canonical(json)?, user_id.as_str(), &format!("ed25519:{master}"), &master)
                    .map_err(|why| invalid_signature(format!("{key_type} key: {why}")))?;
            }
        }
        checked.retain(|key_type, json| !same_json(stored.get(key_type), json));
        let replaces = checked.keys().any(|key_type| stored.contains_key(key_type));
        Ok(CheckedSigningKeys { keys: checked, replaces })
    }

    /// Stores checked cross-signing keys (nothing when they are the stored ones).
    pub async fn store_signing_keys(
        &self,
        user_id: &UserId,
        keys: CheckedSigningKeys,
    ) -> Result<()> {
        if keys.keys.is_empty() {
            return Ok(());
        }
        let position = self.store.set_cross_signing_keys(user_id, keys.keys).await?;
        self.publish(super::DEVICE_LIST_SUBJECT, user_id, position).await;
        Ok(())
    }

    /// `POST /keys/signatures/upload`: stores every signature that verifies and says why each
    /// other one was refused.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed_keys: &BTreeMap<OwnedUserId, SignedKeys>,
    ) -> Result<SignatureFailures> {
        let mut failures = SignatureFailures::new();
        let (mut accepted, mut changed) = (Vec::new(), Vec::new());
        for (user_id, keys) in signed_keys {
            for (key_id, object) in keys.iter() {
                match self.check_signed_key(signer, user_id, key_id, object).await {
                    Ok(signatures) => accepted.extend(signatures),
                    Err(why) => {
                        failures
                            .entry(user_id.clone())
                            .or_default()
                            .insert(key_id.to_owned(), failure(why));
                        continue;
                    }
                }
                // A signature of one's own key changes one's own keys; one of another's master
                // key is shown to the signer only, so it changes what the signer's devices see.
                if !changed.contains(&signer.to_owned()) {
                    changed.push(signer.to_owned());
                }
            }
        }
        if !accepted.is_empty() {
            let position = self.store.add_key_signatures(accepted, changed.clone()).await?;
            for user_id in &changed {
                self.publish(super::DEVICE_LIST_SUBJECT, user_id, position).await;
            }
        }
        Ok(failures)
    }

    /// The cross-signing keys of `user_id` that `requester` may see, added to `found`: the
    /// user-signing key only to its owner, and the master key with the signatures of its owner's
    /// devices and of the requester.
    pub(super) async fn queried_cross_signing_keys(
        &self,
        requester: &UserId,
        user_id: &UserId,
        found: &mut QueriedKeys,
    ) -> Result<()> {
        let stored = self.store.cross_signing_keys(user_id).await?;
        if let Some(json) = stored.get(MASTER_KEY) {
            let mut master: JsonValue = serde_json::from_str(json).map_err(anyhow::Error::from)?;
            let master_key = public_key(&master)?;
            let signatures = self.store.key_signatures(user_id).await?;
            for signature in signatures.iter().filter(|s| {
                s.target_key_id == master_key
                    && (s.signer_user_id == user_id || s.signer_user_id == requester)
            }) {
                add_signature(&mut master, signature);
            }
            found.master_keys.insert(user_id.to_owned(), raw(&master)?);
        }
        if let Some(json) = stored.get(SELF_SIGNING_KEY) {
            found.self_signing_keys.insert(user_id.to_owned(), stored_raw(json)?);
        }
        if let Some(json) = stored.get(USER_SIGNING_KEY).filter(|_| requester == user_id) {
            found.user_signing_keys.insert(user_id.to_owned(), stored_raw(json)?);
        }
        Ok(())
    }

    /// The signatures of one signed object that verify, or why none does.
    async fn check_signed_key(
        &self,
        signer: &UserId,
        user_id: &UserId,
        key_id: &str,
        object: &RawValue,
    ) -> std::result::Result<Vec<KeySignature>, String> {
        let object_json: JsonValue =
            serde_json::from_str(object.get()).map_err(|_| "Not a JSON object".to_owned())?;
        if object_json["user_id"] != user_id.as_str() {
            return Err(format!("The signed key is not a key of {user_id}"));
        }
        let internal = |e: crate::Error| {
            tracing::warn!(error = %e, "cannot check an uploaded signature");
            "The key could not be checked".to_owned()
        };
        let cross = self.store.cross_signing_keys(user_id).await.map_err(|e| internal(e.into()))?;
        let master = cross.get(MASTER_KEY).map(|json| serde_json::from_str::<JsonValue>(json));
        let master = master.transpose().map_err(|_| "The master key is unreadable".to_owned())?;
        let master_key = master.as_ref().and_then(|m| public_key(m).ok());
        if user_id != signer {
            let signer_keys =
                self.store.cross_signing_keys(signer).await.map_err(|e| internal(e.into()))?;
            let Some(master) = master.filter(|_| master_key.as_deref() == Some(key_id)) else {
                return Err(format!("{key_id} is not the master key of {user_id}"));
            };
            return signed_with(
                signer,
                user_id,
                key_id,
                &object_json,
                &master,
                signer_keys.get(USER_SIGNING_KEY),
                "user-signing",
            );
        }
        if let Some(master) = master.filter(|_| master_key.as_deref() == Some(key_id)) {
            return self.device_signatures_of_master(signer, key_id, &object_json, &master).await;
        }
        let devices = self.store.device_keys(user_id).await.map_err(|e| internal(e.into()))?;
        let Some(device) = devices.iter().find(|d| d.device_id == key_id) else {
            return Err(format!("{key_id} is neither a device nor the master key of {user_id}"));
        };
        let device: JsonValue = serde_json::from_str(&device.key_json)
            .map_err(|_| "Unreadable device keys".to_owned())?;
        signed_with(
            signer,
            user_id,
            key_id,
            &object_json,
            &device,
            cross.get(SELF_SIGNING_KEY),
            "self-signing",
        )
    }

    /// The signatures of the signer's own devices on their master key that verify.
    async fn device_signatures_of_master(
        &self,
        signer: &UserId,
        key_id: &str,
        object: &JsonValue,
        master: &JsonValue,
    ) -> std::result::Result<Vec<KeySignature>, String> {
        if object["keys"] != master["keys"] {
            return Err("The signed object is not the stored master key".to_owned());
        }
        let canonical_object =
            canonical(&object.to_string()).map_err(|_| "Not canonical JSON".to_owned())?;
        let devices = self
            .store
            .device_keys(signer)
            .await
            .map_err(|_| "The devices could not be read".to_owned())?;
        let mut accepted = Vec::new();
        for device in devices {
            let Ok(keys) = serde_json::from_str::<JsonValue>(&device.key_json) else { continue };
            let signer_key_id = format!("ed25519:{}", device.device_id);
            let Some(public) = ed25519_of(&keys, &device.device_id) else { continue };
            if super::signatures::signature(&canonical_object, signer.as_str(), &signer_key_id)
                .is_none()
            {
                continue;
            }
            verify(&canonical_object, signer.as_str(), &signer_key_id, &public)?;
            let signature =
                super::signatures::signature(&canonical_object, signer.as_str(), &signer_key_id);
            accepted.push(KeySignature {
                target_user_id: signer.to_owned(),
                target_key_id: key_id.to_owned(),
                signer_user_id: signer.to_owned(),
                signer_key_id,
                signature: signature.unwrap_or_default().to_owned(),
            });
        }
        if accepted.is_empty() {
            return Err("No signature by one of your devices".to_owned());
        }
        Ok(accepted)
    }
}

/// The signature `signer` made of `target` (the stored key `stored`) with their cross-signing
/// key `signing_key` (its JSON), if it verifies.
fn signed_with(
    signer: &UserId,
    user_id: &UserId,
    key_id: &str,
    object: &JsonValue,
    stored: &JsonValue,
    signing_key: Option<&String>,
    signing_key_name: &str,
) -> std::result::Result<Vec<KeySignature>, String> {
    if object["keys"] != stored["keys"] {
        return Err(format!("The signed object is not the stored key {key_id}"));
    }
    let signing_key = signing_key
        .and_then(|json| serde_json::from_str::<JsonValue>(json).ok())
        .and_then(|json| public_key(&json).ok())
        .ok_or_else(|| format!("You have no {signing_key_name} key"))?;
    let signer_key_id = format!("ed25519:{signing_key}");
    let canonical_object =
        canonical(&object.to_string()).map_err(|_| "Not canonical JSON".to_owned())?;
    verify(&canonical_object, signer.as_str(), &signer_key_id, &signing_key)?;
    let signature =
        super::signatures::signature(&canonical_object, signer.as_str(), &signer_key_id);
    Ok(vec![KeySignature {
        target_user_id: user_id.to_owned(),
        target_key_id: key_id.to_owned(),
        signer_user_id: signer.to_owned(),
        signer_key_id,
        signature: signature.unwrap_or_default().to_owned(),
    }])
}

/// Checks one uploaded cross-signing key; returns it as JSON to store.
fn check_signing_key(
    user_id: &UserId,
    key_type: &str,
    usage: KeyUsage,
    raw_key: &Raw<CrossSigningKey>,
) -> Result<String> {
    let key: CrossSigningKey = raw_key.deserialize().map_err(|e| {
        Error::bad_json(format!("The {key_type} key is not a cross-signing key: {e}"))
    })?;
    if key.user_id != user_id {
        return Err(Error::invalid_param(format!("The {key_type} key is not a key of yours")));
    }
    if key.usage != [usage] {
        return Err(Error::invalid_param(format!("The {key_type} key has the wrong usage")));
    }
    let json: JsonValue =
        serde_json::from_str(raw_key.json().get()).map_err(anyhow::Error::from)?;
    public_key(&json)?;
    canonical(&json.to_string())?;
    Ok(json.to_string())
}

/// The one ed25519 public key of a cross-signing key, whose key ID must name it.
fn public_key(key: &JsonValue) -> Result<String> {
    let invalid = || Error::invalid_param("A cross-signing key must have exactly one ed25519 key");
    let keys = key["keys"].as_object().ok_or_else(invalid)?;
    let [(key_id, public)] = keys.iter().collect::<Vec<_>>()[..] else { return Err(invalid()) };
    let public = public.as_str().ok_or_else(invalid)?;
    if key_id.strip_prefix("ed25519:") != Some(public) {
        return Err(Error::invalid_param(
            "A cross-signing key's ID must be ed25519:<its public key>",
        ));
    }
    Ok(public.to_owned())
}

fn same_json(stored: Option<&String>, new: &str) -> bool {
    let parse = |text: &str| serde_json::from_str::<JsonValue>(text).ok();
    stored.is_some_and(|stored| parse(stored).is_some() && parse(stored) == parse(new))
}

fn stored_raw(json: &str) -> Result<Raw<CrossSigningKey>> {
    let json = RawValue::from_string(json.to_owned()).map_err(anyhow::Error::from)?;
    Ok(Raw::from_json(json))
}

fn failure(why: String) -> Failure {
    let json = serde_json::json!({ "errcode": "M_INVALID_SIGNATURE", "error": why });
    serde_json::from_value(json).expect("a failure's fields are an errcode and a message")
}
