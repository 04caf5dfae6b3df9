//! PostgreSQL queries for end-to-end encryption keys and to-device messages, statement for
//! statement what `store/sqlite/keys.rs` does.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};

use super::{
    Conn, PostgresStore, current_stream_position, execute, next_stream_position, query, query_opt,
};
use crate::store::{
    DeviceKeysRecord, KeySignature, KeyStore, NewToDevice, OneTimeKeyRecord, StoreResult,
    ToDeviceRecord, ToDeviceTxn,
};

#[async_trait]
impl KeyStore for PostgresStore {
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        key_json: &str,
    ) -> StoreResult<i64> {
        let (user_id, device_id, key_json) =
            (user_id.to_owned(), device_id.to_owned(), key_json.to_owned());
        self.write(move |w| {
            w.block_on(async {
                let c = w.conn();
                execute(
                    c,
                    "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                    &[&user_id.as_str(), &device_id, &key_json],
                )
                .await?;
                note_change(c, &user_id).await
            })
        })
        .await
    }

    async fn device_keys(&self, user_id: &UserId) -> StoreResult<Vec<DeviceKeysRecord>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT k.device_id, d.display_name, k.key_json
             FROM device_keys k
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id = $1 ORDER BY k.device_id",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceKeysRecord {
                    device_id: row.try_get(0)?,
                    display_name: row.try_get(1)?,
                    key_json: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |w| w.block_on(add_one_time_keys(w.conn(), &user_id, &device_id, keys)))
            .await
    }

    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |w| {
            w.block_on(async {
                for key in keys {
                    execute(
                        w.conn(),
                        "INSERT INTO fallback_keys
                             (user_id, device_id, algorithm, key_id, key_json, used)
                         VALUES ($1, $2, $3, $4, $5, 0)
                         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                         SET used = CASE WHEN fallback_keys.key_id = excluded.key_id
                                          AND fallback_keys.key_json = excluded.key_json
                                         THEN fallback_keys.used ELSE 0 END,
                             key_id = excluded.key_id, key_json = excluded.key_json",
                        &[
                            &user_id.as_str(),
                            &device_id,
                            &key.algorithm,
                            &key.key_id,
                            &key.key_json,
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<BTreeMap<String, u64>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT algorithm, COUNT(*) FROM one_time_keys
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
            &[&user_id.as_str(), &device_id],
        )
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, u64::try_from(row.try_get::<_, i64>(1)?)?)))
            .collect()
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<Vec<String>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT algorithm FROM fallback_keys
             WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
            &[&user_id.as_str(), &device_id],
        )
        .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &str,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKeyRecord>> {
        let (user_id, device_id, algorithm) =
            (user_id.to_owned(), device_id.to_owned(), algorithm.to_owned());
        self.write(move |w| w.block_on(claim_key(w.conn(), &user_id, &device_id, algorithm))).await
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: BTreeMap<String, String>,
    ) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(move |w| {
            w.block_on(async {
                for (key_type, key_json) in &keys {
                    execute(
                        w.conn(),
                        "INSERT INTO cross_signing_keys (user_id, key_type, key_json)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
                        &[&user_id.as_str(), key_type, key_json],
                    )
                    .await?;
                }
                note_change(w.conn(), &user_id).await
            })
        })
        .await
    }

    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<BTreeMap<String, String>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    async fn add_key_signatures(
        &self,
        signatures: Vec<KeySignature>,
        changed: Vec<OwnedUserId>,
    ) -> StoreResult<i64> {
        self.write(move |w| w.block_on(add_key_signatures(w.conn(), &signatures, &changed))).await
    }

    async fn key_signatures(&self, target_user_id: &UserId) -> StoreResult<Vec<KeySignature>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT target_key_id, signer_user_id, signer_key_id, signature
             FROM key_signatures WHERE target_user_id = $1
             ORDER BY target_key_id, signer_user_id, signer_key_id",
            &[&target_user_id.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KeySignature {
                    target_user_id: target_user_id.to_owned(),
                    target_key_id: row.try_get(0)?,
                    signer_user_id: row.try_get::<_, String>(1)?.try_into()?,
                    signer_key_id: row.try_get(2)?,
                    signature: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn mark_device_list_changed(&self, user_id: &UserId) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(move |w| w.block_on(note_change(w.conn(), &user_id))).await
    }

    async fn device_list_changes(&self, after: i64) -> StoreResult<Vec<(OwnedUserId, i64)>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT user_id, stream_position FROM device_list_changes
             WHERE stream_position > $1 ORDER BY stream_position",
            &[&after],
        )
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<_, String>(0)?.try_into()?, row.try_get(1)?)))
            .collect()
    }

    async fn send_to_device(
        &self,
        txn: ToDeviceTxn,
        messages: Vec<NewToDevice>,
    ) -> StoreResult<Option<BTreeMap<OwnedUserId, i64>>> {
        self.write(move |w| w.block_on(send_to_device(w.conn(), &txn, &messages))).await
    }

    async fn to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<ToDeviceRecord>> {
        let limit = i64::try_from(limit)?;
        let rows = query(
            &*self.conn().await?,
            "SELECT stream_position, sender, event_type, content FROM to_device_messages
             WHERE user_id = $1 AND device_id = $2
               AND stream_position > $3 AND stream_position <= $4
             ORDER BY stream_position LIMIT $5",
            &[&user_id.as_str(), &device_id, &after, &upto, &limit],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ToDeviceRecord {
                    stream_position: row.try_get(0)?,
                    sender: row.try_get::<_, String>(1)?.try_into()?,
                    event_type: row.try_get(2)?,
                    content: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn delete_to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        upto: i64,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "DELETE FROM to_device_messages
                 WHERE user_id = $1 AND device_id = $2 AND stream_position <= $3",
                &[&user_id.as_str(), &device_id, &upto],
            ))?;
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
        self.write(move |w| {
            w.block_on(set_dehydrated_device(
                w.conn(),
                &user_id,
                &device_id,
                name.as_deref(),
                &data,
            ))
        })
        .await
    }

    async fn dehydrated_device(&self, user_id: &UserId) -> StoreResult<Option<(String, String)>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1",
            &[&user_id.as_str()],
        )
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).transpose()
    }
}

async fn set_dehydrated_device(
    c: &Conn,
    user_id: &UserId,
    device_id: &str,
    name: Option<&str>,
    data: &str,
) -> StoreResult<Option<String>> {
    let user = user_id.as_str();
    let previous =
        query_opt(c, "SELECT device_id FROM dehydrated_devices WHERE user_id = $1", &[&user])
            .await?
            .map(|row| row.try_get::<_, String>(0))
            .transpose()?
            .filter(|previous| previous != device_id);
    if let Some(previous) = &previous {
        execute(c, "DELETE FROM devices WHERE user_id = $1 AND device_id = $2", &[&user, previous])
            .await?;
    }
    execute(
        c,
        "INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name",
        &[&user, &device_id, &name],
    )
    .await?;
    execute(
        c,
        "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
         SET device_id = excluded.device_id, device_data = excluded.device_data",
        &[&user, &device_id, &data],
    )
    .await?;
    Ok(previous)
}

/// Records a device-list change of the user at a new stream position.
async fn note_change(c: &Conn, user_id: &UserId) -> StoreResult<i64> {
    let position = next_stream_position(c).await?;
    execute(
        c,
        "INSERT INTO device_list_changes (user_id, stream_position) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET stream_position = excluded.stream_position",
        &[&user_id.as_str(), &position],
    )
    .await?;
    Ok(position)
}

async fn add_one_time_keys(
    c: &Conn,
    user_id: &UserId,
    device_id: &str,
    keys: Vec<OneTimeKeyRecord>,
) -> StoreResult<Vec<String>> {
    let mut conflicts = Vec::new();
    let mut new = Vec::new();
    for key in keys {
        let stored = query_opt(
            c,
            "SELECT key_json FROM one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
            &[&user_id.as_str(), &device_id, &key.key_id],
        )
        .await?;
        match stored.map(|row| row.try_get::<_, String>(0)).transpose()? {
            Some(json) if json == key.key_json => {}
            Some(_) => conflicts.push(key.key_id),
            None => new.push(key),
        }
    }
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }
    for key in new {
        execute(
            c,
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
             VALUES ($1, $2, $3, $4, $5)",
            &[&user_id.as_str(), &device_id, &key.algorithm, &key.key_id, &key.key_json],
        )
        .await?;
    }
    Ok(conflicts)
}

async fn claim_key(
    c: &Conn,
    user_id: &UserId,
    device_id: &str,
    algorithm: String,
) -> StoreResult<Option<OneTimeKeyRecord>> {
    let mut claimed = query_opt(
        c,
        "DELETE FROM one_time_keys
         WHERE user_id = $1 AND device_id = $2 AND key_id = (
             SELECT key_id FROM one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             ORDER BY key_id LIMIT 1)
         RETURNING key_id, key_json",
        &[&user_id.as_str(), &device_id, &algorithm],
    )
    .await?;
    if claimed.is_none() {
        claimed = query_opt(
            c,
            "UPDATE fallback_keys SET used = 1
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             RETURNING key_id, key_json",
            &[&user_id.as_str(), &device_id, &algorithm],
        )
        .await?;
    }
    claimed
        .map(|row| {
            Ok(OneTimeKeyRecord { algorithm, key_id: row.try_get(0)?, key_json: row.try_get(1)? })
        })
        .transpose()
}

async fn add_key_signatures(
    c: &Conn,
    signatures: &[KeySignature],
    changed: &[OwnedUserId],
) -> StoreResult<i64> {
    for s in signatures {
        execute(
            c,
            "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id,
                                         signer_key_id, signature)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
             DO UPDATE SET signature = excluded.signature",
            &[
                &s.target_user_id.as_str(),
                &s.target_key_id,
                &s.signer_user_id.as_str(),
                &s.signer_key_id,
                &s.signature,
            ],
        )
        .await?;
    }
    let mut position = current_stream_position(c).await?;
    for user_id in changed {
        position = note_change(c, user_id).await?;
    }
    Ok(position)
}

async fn send_to_device(
    c: &Conn,
    txn: &ToDeviceTxn,
    messages: &[NewToDevice],
) -> StoreResult<Option<BTreeMap<OwnedUserId, i64>>> {
    let fresh = execute(
        c,
        "INSERT INTO to_device_transactions (user_id, device_id, txn_id)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&txn.sender.as_str(), &txn.sender_device, &txn.txn_id],
    )
    .await?;
    if fresh == 0 {
        return Ok(None);
    }
    let mut recipients = BTreeMap::new();
    for message in messages {
        let user_id = message.user_id.as_str();
        let devices = query(
            c,
            "SELECT device_id FROM devices
             WHERE user_id = $1 AND ($2 = '*' OR device_id = $2) ORDER BY device_id",
            &[&user_id, &message.device_id],
        )
        .await?;
        for row in devices {
            let device_id: String = row.try_get(0)?;
            let position = next_stream_position(c).await?;
            execute(
                c,
                "INSERT INTO to_device_messages (user_id, device_id, stream_position,
                                                 sender, event_type, content)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &user_id,
                    &device_id,
                    &position,
                    &txn.sender.as_str(),
                    &message.event_type,
                    &message.content,
                ],
            )
            .await?;
            recipients.insert(message.user_id.clone(), position);
        }
    }
    Ok(Some(recipients))
}
