//! SQLite queries for end-to-end encryption keys and to-device messages.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{SqliteStore, current_stream_position, next_stream_position};
use crate::store::{
    DeviceKeysRecord, KeySignature, KeyStore, NewToDevice, OneTimeKeyRecord, StoreResult,
    ToDeviceRecord, ToDeviceTxn,
};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        key_json: &str,
    ) -> StoreResult<i64> {
        let (user_id, device_id, key_json) =
            (user_id.to_owned(), device_id.to_owned(), key_json.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO device_keys (user_id, device_id, key_json) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                params![user_id.as_str(), device_id, key_json],
            )?;
            note_change(c, &user_id)
        })
        .await
    }

    async fn device_keys(&self, user_id: &UserId) -> StoreResult<Vec<DeviceKeysRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT k.device_id, d.display_name, k.key_json
                 FROM device_keys k
                 JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
                 WHERE k.user_id = ?1 ORDER BY k.device_id",
            )?;
            let rows = statement.query_map([user_id.as_str()], |row| {
                Ok(DeviceKeysRecord {
                    device_id: row.get(0)?,
                    display_name: row.get(1)?,
                    key_json: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |c| {
            let mut conflicts = Vec::new();
            let mut new = Vec::new();
            for key in keys {
                match stored_one_time_key(c, &user_id, &device_id, &key.key_id)? {
                    Some(json) if json == key.key_json => {}
                    Some(_) => conflicts.push(key.key_id),
                    None => new.push(key),
                }
            }
            if !conflicts.is_empty() {
                return Ok(conflicts);
            }
            for key in new {
                c.execute(
                    "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user_id.as_str(), device_id, key.algorithm, key.key_id, key.key_json],
                )?;
            }
            Ok(conflicts)
        })
        .await
    }

    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |c| {
            for key in keys {
                c.execute(
                    "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                     SET used = CASE WHEN fallback_keys.key_id = excluded.key_id
                                      AND fallback_keys.key_json = excluded.key_json
                                     THEN fallback_keys.used ELSE 0 END,
                         key_id = excluded.key_id, key_json = excluded.key_json",
                    params![user_id.as_str(), device_id, key.algorithm, key.key_id, key.key_json],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<BTreeMap<String, u64>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT algorithm, COUNT(*) FROM one_time_keys
                 WHERE user_id = ?1 AND device_id = ?2 GROUP BY algorithm",
            )?;
            let rows = statement.query_map(params![user_id.as_str(), device_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut counts = BTreeMap::new();
            for row in rows {
                let (algorithm, count) = row?;
                counts.insert(algorithm, u64::try_from(count)?);
            }
            Ok(counts)
        })
        .await
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT algorithm FROM fallback_keys
                 WHERE user_id = ?1 AND device_id = ?2 AND used = 0 ORDER BY algorithm",
            )?;
            let rows = statement.query_map(params![user_id.as_str(), device_id], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &str,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKeyRecord>> {
        let (user_id, device_id, algorithm) =
            (user_id.to_owned(), device_id.to_owned(), algorithm.to_owned());
        self.write(move |c| {
            let claimed = c
                .query_row(
                    "DELETE FROM one_time_keys
                     WHERE user_id = ?1 AND device_id = ?2 AND key_id = (
                         SELECT key_id FROM one_time_keys
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                         ORDER BY key_id LIMIT 1)
                     RETURNING key_id, key_json",
                    params![user_id.as_str(), device_id, algorithm],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()?;
            let claimed = match claimed {
                Some(found) => Some(found),
                None => c
                    .query_row(
                        "UPDATE fallback_keys SET used = 1
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                         RETURNING key_id, key_json",
                        params![user_id.as_str(), device_id, algorithm],
                        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                    )
                    .optional()?,
            };
            Ok(claimed.map(|(key_id, key_json)| OneTimeKeyRecord { algorithm, key_id, key_json }))
        })
        .await
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: BTreeMap<String, String>,
    ) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(move |c| {
            for (key_type, key_json) in keys {
                c.execute(
                    "INSERT INTO cross_signing_keys (user_id, key_type, key_json)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
                    params![user_id.as_str(), key_type, key_json],
                )?;
            }
            note_change(c, &user_id)
        })
        .await
    }

    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<BTreeMap<String, String>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement =
                c.prepare("SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = ?1")?;
            let rows =
                statement.query_map([user_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_key_signatures(
        &self,
        signatures: Vec<KeySignature>,
        changed: Vec<OwnedUserId>,
    ) -> StoreResult<i64> {
        self.write(move |c| {
            for s in &signatures {
                c.execute(
                    "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id,
                                                 signer_key_id, signature)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                     DO UPDATE SET signature = excluded.signature",
                    params![
                        s.target_user_id.as_str(),
                        s.target_key_id,
                        s.signer_user_id.as_str(),
                        s.signer_key_id,
                        s.signature
                    ],
                )?;
            }
            let mut position = current_stream_position(c)?;
            for user_id in &changed {
                position = note_change(c, user_id)?;
            }
            Ok(position)
        })
        .await
    }

    async fn key_signatures(&self, target_user_id: &UserId) -> StoreResult<Vec<KeySignature>> {
        let target = target_user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT target_key_id, signer_user_id, signer_key_id, signature
                 FROM key_signatures WHERE target_user_id = ?1
                 ORDER BY target_key_id, signer_user_id, signer_key_id",
            )?;
            let rows = statement.query_map([target.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })?;
            let mut signatures = Vec::new();
            for row in rows {
                let (target_key_id, signer, signer_key_id, signature) = row?;
                signatures.push(KeySignature {
                    target_user_id: target.clone(),
                    target_key_id,
                    signer_user_id: signer.try_into()?,
                    signer_key_id,
                    signature,
                });
            }
            Ok(signatures)
        })
        .await
    }

    async fn mark_device_list_changed(&self, user_id: &UserId) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(move |c| note_change(c, &user_id)).await
    }

    async fn device_list_changes(&self, after: i64) -> StoreResult<Vec<(OwnedUserId, i64)>> {
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT user_id, stream_position FROM device_list_changes
                 WHERE stream_position > ?1 ORDER BY stream_position",
            )?;
            let rows = statement
                .query_map([after], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            let mut changes = Vec::new();
            for row in rows {
                let (user_id, position) = row?;
                changes.push((user_id.try_into()?, position));
            }
            Ok(changes)
        })
        .await
    }

    async fn send_to_device(
        &self,
        txn: ToDeviceTxn,
        messages: Vec<NewToDevice>,
    ) -> StoreResult<Option<BTreeMap<OwnedUserId, i64>>> {
        self.write(move |c| {
            let fresh = c.execute(
                "INSERT INTO to_device_transactions (user_id, device_id, txn_id)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![txn.sender.as_str(), txn.sender_device, txn.txn_id],
            )?;
            if fresh == 0 {
                return Ok(None);
            }
            let mut recipients = BTreeMap::new();
            for message in messages {
                for device_id in target_devices(c, &message)? {
                    let position = next_stream_position(c)?;
                    c.execute(
                        "INSERT INTO to_device_messages (user_id, device_id, stream_position,
                                                         sender, event_type, content)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            message.user_id.as_str(),
                            device_id,
                            position,
                            txn.sender.as_str(),
                            message.event_type,
                            message.content
                        ],
                    )?;
                    recipients.insert(message.user_id.clone(), position);
                }
            }
            Ok(Some(recipients))
        })
        .await
    }

    async fn to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<ToDeviceRecord>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let limit = i64::try_from(limit)?;
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT stream_position, sender, event_type, content FROM to_device_messages
                 WHERE user_id = ?1 AND device_id = ?2
                   AND stream_position > ?3 AND stream_position <= ?4
                 ORDER BY stream_position LIMIT ?5",
            )?;
            let rows = statement.query_map(
                params![user_id.as_str(), device_id, after, upto, limit],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )?;
            let mut messages = Vec::new();
            for row in rows {
                let (stream_position, sender, event_type, content) = row?;
                let sender = sender.try_into()?;
                messages.push(ToDeviceRecord { stream_position, sender, event_type, content });
            }
            Ok(messages)
        })
        .await
    }

    async fn delete_to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        upto: i64,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM to_device_messages
                 WHERE user_id = ?1 AND device_id = ?2 AND stream_position <= ?3",
                params![user_id.as_str(), device_id, upto],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_dehydrated_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &str,
    ) -> StoreResult<Option<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let (name, data) = (display_name.map(str::to_owned), device_data.to_owned());
        self.write(move |c| {
            let previous: Option<String> = c
                .query_row(
                    "SELECT device_id FROM dehydrated_devices WHERE user_id = ?1",
                    [user_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?
                .filter(|previous| *previous != device_id);
            if let Some(previous) = &previous {
                c.execute(
                    "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                    params![user_id.as_str(), previous],
                )?;
            }
            c.execute(
                "INSERT INTO devices (user_id, device_id, display_name) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name",
                params![user_id.as_str(), device_id, name],
            )?;
            c.execute(
                "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE
                 SET device_id = excluded.device_id, device_data = excluded.device_data",
                params![user_id.as_str(), device_id, data],
            )?;
            Ok(previous)
        })
        .await
    }

    async fn dehydrated_device(&self, user_id: &UserId) -> StoreResult<Option<(String, String)>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?1",
                [user_id.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
        })
        .await
    }
}

/// Records a device-list change of the user at a new stream position.
fn note_change(c: &Connection, user_id: &UserId) -> StoreResult<i64> {
    let position = next_stream_position(c)?;
    c.execute(
        "INSERT INTO device_list_changes (user_id, stream_position) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET stream_position = excluded.stream_position",
        params![user_id.as_str(), position],
    )?;
    Ok(position)
}

fn stored_one_time_key(
    c: &Connection,
    user_id: &UserId,
    device_id: &str,
    key_id: &str,
) -> StoreResult<Option<String>> {
    Ok(c.query_row(
        "SELECT key_json FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND key_id = ?3",
        params![user_id.as_str(), device_id, key_id],
        |row| row.get(0),
    )
    .optional()?)
}

/// The existing devices a message goes to: all of the user's for `*`.
fn target_devices(c: &Connection, message: &NewToDevice) -> StoreResult<Vec<String>> {
    let user_id = message.user_id.as_str();
    let mut statement = c.prepare(
        "SELECT device_id FROM devices
         WHERE user_id = ?1 AND (?2 = '*' OR device_id = ?2) ORDER BY device_id",
    )?;
    let rows = statement.query_map(params![user_id, message.device_id], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
