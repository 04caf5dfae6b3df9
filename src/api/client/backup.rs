//! Server-side key backups: `/room_keys/version` (create, read, update, delete a backup version)
//! and `/room_keys/keys` (store, read, delete keys: all, one room's, one session's).

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    keys::backup::RoomKeys,
    services::Services,
    store::{BackupCounts, BackupKeysScope},
};

pub fn routes(router: &mut Router) {
    router
        .add(create_backup_version)
        .add(get_latest_backup_info)
        .add(get_backup_info)
        .add(update_backup_version)
        .add(delete_backup_version)
        .add(add_backup_keys)
        .add(add_backup_keys_for_room)
        .add(add_backup_keys_for_session)
        .add(get_backup_keys)
        .add(get_backup_keys_for_room)
        .add(get_backup_keys_for_session)
        .add(delete_backup_keys)
        .add(delete_backup_keys_for_room)
        .add(delete_backup_keys_for_session);
}

async fn create_backup_version(
    services: Arc<Services>,
    user: User,
    request: create_backup_version::v3::Request,
) -> Result<create_backup_version::v3::Response> {
    let version = services.key_backups.create_version(&user.user_id, &request.algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

async fn get_latest_backup_info(
    services: Arc<Services>,
    user: User,
    _: get_latest_backup_info::v3::Request,
) -> Result<get_latest_backup_info::v3::Response> {
    let info = services.key_backups.version_info(&user.user_id, None).await?;
    let (count, etag) = count_and_etag(info.counts)?;
    Ok(get_latest_backup_info::v3::Response::new(info.algorithm, count, etag, info.version))
}

async fn get_backup_info(
    services: Arc<Services>,
    user: User,
    request: get_backup_info::v3::Request,
) -> Result<get_backup_info::v3::Response> {
    let info = services.key_backups.version_info(&user.user_id, Some(&request.version)).await?;
    let (count, etag) = count_and_etag(info.counts)?;
    Ok(get_backup_info::v3::Response::new(info.algorithm, count, etag, info.version))
}

async fn update_backup_version(
    services: Arc<Services>,
    user: User,
    request: update_backup_version::v3::Request,
) -> Result<update_backup_version::v3::Response> {
    let backups = &services.key_backups;
    backups.update_version(&user.user_id, &request.version, &request.algorithm).await?;
    Ok(update_backup_version::v3::Response::new())
}

async fn delete_backup_version(
    services: Arc<Services>,
    user: User,
    request: delete_backup_version::v3::Request,
) -> Result<delete_backup_version::v3::Response> {
    services.key_backups.delete_version(&user.user_id, &request.version).await?;
    Ok(delete_backup_version::v3::Response::new())
}

async fn add_backup_keys(
    services: Arc<Services>,
    user: User,
    request: add_backup_keys::v3::Request,
) -> Result<add_backup_keys::v3::Response> {
    let keys: RoomKeys =
        request.rooms.into_iter().map(|(room_id, backup)| (room_id, backup.sessions)).collect();
    let counts = services.key_backups.put_keys(&user.user_id, &request.version, &keys).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

async fn add_backup_keys_for_room(
    services: Arc<Services>,
    user: User,
    request: add_backup_keys_for_room::v3::Request,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let keys = RoomKeys::from([(request.room_id, request.sessions)]);
    let counts = services.key_backups.put_keys(&user.user_id, &request.version, &keys).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn add_backup_keys_for_session(
    services: Arc<Services>,
    user: User,
    request: add_backup_keys_for_session::v3::Request,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let sessions = BTreeMap::from([(request.session_id, request.session_data)]);
    let keys = RoomKeys::from([(request.room_id, sessions)]);
    let counts = services.key_backups.put_keys(&user.user_id, &request.version, &keys).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

async fn get_backup_keys(
    services: Arc<Services>,
    user: User,
    request: get_backup_keys::v3::Request,
) -> Result<get_backup_keys::v3::Response> {
    let keys =
        services.key_backups.keys(&user.user_id, &request.version, BackupKeysScope::All).await?;
    let rooms = keys
        .into_iter()
        .map(|(room_id, sessions)| (room_id, RoomKeyBackup::new(sessions)))
        .collect();
    Ok(get_backup_keys::v3::Response::new(rooms))
}

async fn get_backup_keys_for_room(
    services: Arc<Services>,
    user: User,
    request: get_backup_keys_for_room::v3::Request,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let scope = BackupKeysScope::Room(request.room_id.clone());
    let mut keys = services.key_backups.keys(&user.user_id, &request.version, scope).await?;
    let sessions = keys.remove(&request.room_id).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

async fn get_backup_keys_for_session(
    services: Arc<Services>,
    user: User,
    request: get_backup_keys_for_session::v3::Request,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let scope = BackupKeysScope::Session(request.room_id.clone(), request.session_id.clone());
    let mut keys = services.key_backups.keys(&user.user_id, &request.version, scope).await?;
    let key_data = keys
        .remove(&request.room_id)
        .and_then(|mut sessions| sessions.remove(&request.session_id))
        .ok_or_else(|| Error::not_found("No key for this session in the backup"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(key_data))
}

async fn delete_backup_keys(
    services: Arc<Services>,
    user: User,
    request: delete_backup_keys::v3::Request,
) -> Result<delete_backup_keys::v3::Response> {
    let backups = &services.key_backups;
    let counts = backups.delete_keys(&user.user_id, &request.version, BackupKeysScope::All).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

async fn delete_backup_keys_for_room(
    services: Arc<Services>,
    user: User,
    request: delete_backup_keys_for_room::v3::Request,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let scope = BackupKeysScope::Room(request.room_id);
    let counts = services.key_backups.delete_keys(&user.user_id, &request.version, scope).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn delete_backup_keys_for_session(
    services: Arc<Services>,
    user: User,
    request: delete_backup_keys_for_session::v3::Request,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let scope = BackupKeysScope::Session(request.room_id, request.session_id);
    let counts = services.key_backups.delete_keys(&user.user_id, &request.version, scope).await?;
    let (count, etag) = count_and_etag(counts)?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count))
}

/// The `count` and `etag` of a version's answer.
fn count_and_etag(counts: BackupCounts) -> Result<(UInt, String)> {
    let count = UInt::try_from(counts.count).map_err(anyhow::Error::from)?;
    Ok((count, counts.etag.to_string()))
}
