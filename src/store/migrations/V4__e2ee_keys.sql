-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys, the
-- signatures uploaded for them, device-list changes, and to-device messages.
--
-- Every key of a device goes with the device: deleting the device deletes them (and its to-device
-- inbox) through the foreign keys.

-- A device's identity keys (a signed DeviceKeys object, as uploaded, without `unsigned`).
CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Unclaimed one-time keys; a claim deletes the row.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- e.g. signed_curve25519
    algorithm TEXT NOT NULL,
    -- the whole key ID, `<algorithm>:<key name>`
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX one_time_keys_by_algorithm ON one_time_keys (user_id, device_id, algorithm);

-- One fallback key per device and algorithm, handed out when no one-time key is left.
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    -- 1 once it was claimed.
    used INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- A user's cross-signing keys (CrossSigningKey objects as uploaded).
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    -- master, self_signing or user_signing
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the keys they sign when the
-- keys are queried. The target is a device (its device ID) or a master key (its public key).
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    -- e.g. ed25519:<public key of the signing key> or ed25519:<device ID>
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- For each user, the stream position of the latest change of their devices or keys.
CREATE TABLE device_list_changes (
    user_id TEXT PRIMARY KEY NOT NULL,
    stream_position BIGINT NOT NULL
);
CREATE INDEX device_list_changes_by_position ON device_list_changes (stream_position);

-- To-device messages waiting for their device, each at a stream position of its own, deleted
-- once the device syncs with a token past it.
CREATE TABLE to_device_messages (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_position),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- The transaction IDs of sendToDevice requests, so that a retried request is not sent twice.
CREATE TABLE to_device_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- A user's dehydrated device (MSC3814): a device with no access token whose keys and to-device
-- inbox are those of its `devices` row, and the client's encrypted pickle of it.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
