//! A [`Storage`] that forwards every call to an inner store and can replace that store inside
//! the running process: the last step of moving between SQLite and PostgreSQL.
//!
//! The move ends like this: [`SwitchableStore::pause_writes`] waits until every write in flight
//! has finished and holds new ones; the migrator copies the last changes from
//! [`SwitchableStore::current`]; [`WritePause::switch_to`] installs the new store and releases
//! the held writes onto it. Dropping the [`WritePause`] instead (the copy failed) releases them
//! onto the old store. What holds:
//!
//! - Reads are never held: they run on whichever store is current when they start, so a read in
//!   flight during the switch may finish on the old store; one that starts after it uses the new.
//! - A write runs entirely on the store that was current when it was let through, and the pause
//!   waits for it. Once `pause_writes` returns, the old store receives no further write, so a copy
//!   taken during the pause is complete and nothing is written to the old store after the switch.
//! - That holds even when a write's caller stops waiting (a client hangs up): the backends queue a
//!   write to their writer thread, which commits it whether or not anyone still waits, so each
//!   write runs in a task of its own that keeps the pause out until the backend has answered.
//! - Pauses queue up fairly behind the writes in flight, and writes that arrive while a pause
//!   waits or holds queue up behind it: a stream of writes cannot starve the pause.
//!
//! This module knows nothing of SQL or of how the copy is made; it only decides which store a
//! call reaches and when.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, PoisonError, RwLock},
};

use async_trait::async_trait;
use ruma::{
    EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};
use serde_json::value::RawValue;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock as AsyncRwLock};

use super::{
    AccountDataRecord, AliasRecord, AppendedEvent, AppserviceListing, BackupDeletion,
    BackupKeyRecord, BackupKeysChange, BackupKeysScope, BackupStore, BackupVersionRecord,
    BusMessage, BusStore, DeviceKeysRecord, DeviceRecord, DeviceSeen, DirectoryUser, EventRecord,
    KeySignature, KeyStore, MediaRecord, MediaReservation, MediaStore, MembershipRecord,
    NewBackupKey, NewExpiringToken, NewMedia, NewNotification, NewReceipt, NewReport, NewSession,
    NewToDevice, NewUser, NotificationCount, NotificationRecord, NotificationsQuery,
    OneTimeKeyRecord, PushStore, PusherCleanup, PusherRecord, ReceiptRecord, ReceiptStore,
    RefreshSession, RefreshedSession, RelationSummary, ReportRecord, ReportStore, RoomEventsQuery,
    RoomJob, RoomStore, Session, Store, StoreResult, ThreadRoot, ThreadsQuery, ThumbnailKey,
    ThumbnailRecord, TimestampQuery, ToDeviceRecord, ToDeviceTxn, TokenStore, TransactionKey,
    UserDirectoryQuery, UserDirectoryStore, UserRecord, UserStore,
    threepids::{
        NewValidationSession, RequestedSession, ThreepidBind, ThreepidRecord, ThreepidStore,
        TokenCheck, ValidationSessionRecord,
    },
};

/// The store the rest of the server holds (as a [`Store`]) while the migrator keeps an
/// `Arc<SwitchableStore>` to pause writes and switch backends.
pub struct SwitchableStore {
    /// The store calls reach now, shared with the [`WritePause`] that may replace it. Locked only
    /// to clone or replace the `Arc`, never across an `await`.
    inner: Arc<RwLock<Store>>,
    /// Every write holds a read guard until its backend answers; a [`WritePause`] holds the write
    /// guard. Tokio's lock is fair, so a pause waiting for it holds back the writes behind it.
    writes: Arc<AsyncRwLock<()>>,
}

/// Writes are held while this lives. Dropping it releases them onto the store they would have
/// reached before; [`WritePause::switch_to`] releases them onto a new one.
#[must_use = "writes resume as soon as the pause is dropped"]
pub struct WritePause {
    inner: Arc<RwLock<Store>>,
    _writes: OwnedRwLockWriteGuard<()>,
}

impl SwitchableStore {
    pub fn new(inner: Store) -> Self {
        Self { inner: Arc::new(RwLock::new(inner)), writes: Arc::new(AsyncRwLock::new(())) }
    }

    /// The store calls reach now: during a pause, the old one, for the migrator to copy from.
    pub fn current(&self) -> Store {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until every write in flight has finished, then holds new writes until the returned
    /// pause is dropped or switched. Reads go on throughout.
    pub async fn pause_writes(&self) -> WritePause {
        let writes = self.writes.clone().write_owned().await;
        WritePause { inner: self.inner.clone(), _writes: writes }
    }

    /// Runs one write on the current store, once no pause holds writes back.
    ///
    /// The call runs in a task of its own that keeps the read guard until the backend answers, so
    /// a caller that stops waiting cannot let a pause start while its write is still queued in
    /// the old store's writer.
    async fn write<T, E, F, Fut>(&self, call: F) -> Result<T, E>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let held = self.writes.clone().read_owned().await;
        let write = call(self.current());
        let task = tokio::spawn(async move {
            let outcome = write.await;
            drop(held);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(anyhow::anyhow!("a store write was cancelled: {error}").into()),
        }
    }
}

impl WritePause {
    /// Makes `store` the one every call reaches from now on, then releases the held writes onto
    /// it. The old store is dropped here unless someone else (the migrator) still holds it.
    pub fn switch_to(self, store: Store) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = store;
        tracing::info!("storage switched to the new backend; writes resume there");
    }
}

#[async_trait]
impl UserStore for SwitchableStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<bool> {
        self.write(|s| async move { s.create_user(user).await }).await
    }

    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        self.current().user(user_id).await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.current().count_users().await
    }

    async fn set_password_hash(&self, user_id: &UserId, password_hash: &str) -> StoreResult<()> {
        let (user_id, hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(|s| async move { s.set_password_hash(&user_id, &hash).await }).await
    }

    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.deactivate_user(&user_id).await }).await
    }

    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()> {
        let (user_id, name) = (user_id.to_owned(), name.map(str::to_owned));
        self.write(|s| async move { s.set_displayname(&user_id, name.as_deref()).await }).await
    }

    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()> {
        let (user_id, url) = (user_id.to_owned(), url.map(str::to_owned));
        self.write(|s| async move { s.set_avatar_url(&user_id, url.as_deref()).await }).await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.write(|s| async move { s.create_session(session).await }).await
    }

    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        self.current().session_by_token(token_hash).await
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        self.current().devices(user_id).await
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        self.current().device(user_id, device_id).await
    }

    async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let (user_id, device_id, name) =
            (user_id.to_owned(), device_id.to_owned(), name.map(str::to_owned));
        self.write(|s| async move {
            s.set_device_display_name(&user_id, &device_id, name.as_deref()).await
        })
        .await
    }

    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_ids) = (user_id.to_owned(), device_ids.to_vec());
        self.write(|s| async move { s.delete_devices(&user_id, &device_ids).await }).await
    }

    async fn delete_all_devices(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, keep) = (user_id.to_owned(), keep.map(str::to_owned));
        self.write(|s| async move { s.delete_all_devices(&user_id, keep.as_deref()).await }).await
    }

    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        seen: DeviceSeen,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(|s| async move { s.touch_device(&user_id, &device_id, seen).await }).await
    }

    async fn set_locked(&self, user_id: &UserId, locked: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.set_locked(&user_id, locked).await }).await
    }

    async fn set_suspended(&self, user_id: &UserId, suspended: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.set_suspended(&user_id, suspended).await }).await
    }

    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>> {
        self.current().profile_fields(user_id).await
    }

    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: &str,
    ) -> StoreResult<()> {
        let (user_id, field, value) = (user_id.to_owned(), field.to_owned(), value.to_owned());
        self.write(|s| async move { s.set_profile_field(&user_id, &field, &value).await }).await
    }

    async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> StoreResult<()> {
        let (user_id, field) = (user_id.to_owned(), field.to_owned());
        self.write(|s| async move { s.delete_profile_field(&user_id, &field).await }).await
    }

    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
    ) -> StoreResult<i64> {
        let (user_id, room_id) = (user_id.to_owned(), room_id.map(RoomId::to_owned));
        let (data_type, content) = (data_type.to_owned(), content.to_owned());
        self.write(|s| async move {
            s.set_account_data(&user_id, room_id.as_deref(), &data_type, &content).await
        })
        .await
    }

    async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StoreResult<Option<Box<RawValue>>> {
        self.current().account_data(user_id, room_id, data_type).await
    }

    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: i64,
    ) -> StoreResult<Vec<AccountDataRecord>> {
        self.current().account_data_since(user_id, since).await
    }

    async fn create_filter(&self, user_id: &UserId, filter: &str) -> StoreResult<i64> {
        let (user_id, filter) = (user_id.to_owned(), filter.to_owned());
        self.write(|s| async move { s.create_filter(&user_id, &filter).await }).await
    }

    async fn filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<String>> {
        self.current().filter(user_id, filter_id).await
    }
}

#[async_trait]
impl RoomStore for SwitchableStore {
    async fn write_rooms(&self, job: RoomJob) -> crate::Result<Vec<AppendedEvent>> {
        self.write(|s| async move { s.write_rooms(job).await }).await
    }

    async fn current_position(&self) -> StoreResult<i64> {
        self.current().current_position().await
    }

    async fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
        self.current().room_version(room_id).await
    }

    async fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
        self.current().event(event_id).await
    }

    async fn events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<EventRecord>> {
        self.current().events(event_ids).await
    }

    async fn transaction_event(&self, key: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
        self.current().transaction_event(key).await
    }

    async fn transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &str,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<std::collections::BTreeMap<OwnedEventId, String>> {
        self.current().transaction_ids(user_id, device_id, event_ids).await
    }

    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>> {
        self.current().current_state(room_id).await
    }

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>> {
        self.current().current_state_event(room_id, event_type, state_key).await
    }

    async fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<EventRecord>> {
        self.current().state_at(room_id, at).await
    }

    async fn state_key_history(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Vec<EventRecord>> {
        self.current().state_key_history(room_id, event_type, state_key).await
    }

    async fn state_changes(
        &self,
        room_id: &RoomId,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        self.current().state_changes(room_id, from, to).await
    }

    async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<i64>,
    ) -> StoreResult<Option<MembershipRecord>> {
        self.current().membership(room_id, user_id, at).await
    }

    async fn memberships_of(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>> {
        self.current().memberships_of(user_id).await
    }

    async fn members_with(
        &self,
        room_id: &RoomId,
        membership: &str,
    ) -> StoreResult<Vec<OwnedUserId>> {
        self.current().members_with(room_id, membership).await
    }

    async fn room_events(&self, query: RoomEventsQuery) -> StoreResult<Vec<EventRecord>> {
        self.current().room_events(query).await
    }

    async fn events_by_timestamp(&self, query: TimestampQuery) -> StoreResult<Vec<EventRecord>> {
        self.current().events_by_timestamp(query).await
    }

    async fn thread_roots(&self, query: ThreadsQuery) -> StoreResult<Vec<ThreadRoot>> {
        self.current().thread_roots(query).await
    }

    async fn relation_summaries(
        &self,
        parents: &[OwnedEventId],
        user_id: &UserId,
    ) -> StoreResult<std::collections::BTreeMap<OwnedEventId, RelationSummary>> {
        self.current().relation_summaries(parents, user_id).await
    }

    async fn rooms_changed(
        &self,
        room_ids: &[OwnedRoomId],
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        self.current().rooms_changed(room_ids, from, to).await
    }

    async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()> {
        let (user_id, room_id) = (user_id.to_owned(), room_id.to_owned());
        self.write(|s| async move { s.forget_room(&user_id, &room_id).await }).await
    }

    async fn forgotten_rooms(&self, user_id: &UserId) -> StoreResult<Vec<OwnedRoomId>> {
        self.current().forgotten_rooms(user_id).await
    }

    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<bool> {
        let (alias, room_id, creator) = (alias.to_owned(), room_id.to_owned(), creator.to_owned());
        self.write(|s| async move { s.create_alias(&alias, &room_id, &creator).await }).await
    }

    async fn alias(&self, alias: &RoomAliasId) -> StoreResult<Option<AliasRecord>> {
        self.current().alias(alias).await
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool> {
        let alias = alias.to_owned();
        self.write(|s| async move { s.delete_alias(&alias).await }).await
    }

    async fn room_aliases(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>> {
        self.current().room_aliases(room_id).await
    }

    async fn set_published(&self, room_id: &RoomId, published: bool) -> StoreResult<()> {
        let room_id = room_id.to_owned();
        self.write(|s| async move { s.set_published(&room_id, published).await }).await
    }

    async fn is_published(&self, room_id: &RoomId) -> StoreResult<bool> {
        self.current().is_published(room_id).await
    }

    async fn published_rooms(&self) -> StoreResult<Vec<OwnedRoomId>> {
        self.current().published_rooms().await
    }

    async fn set_appservice_published(
        &self,
        listing: AppserviceListing,
        published: bool,
    ) -> StoreResult<()> {
        self.write(|s| async move { s.set_appservice_published(listing, published).await }).await
    }

    async fn appservice_published_rooms(
        &self,
        network_id: Option<&str>,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        self.current().appservice_published_rooms(network_id).await
    }
}

#[async_trait]
impl PushStore for SwitchableStore {
    async fn add_notifications(&self, notifications: Vec<NewNotification>) -> StoreResult<i64> {
        self.write(|s| async move { s.add_notifications(notifications).await }).await
    }

    async fn notification_counts(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<NotificationCount>> {
        self.current().notification_counts(user_id, room_ids).await
    }

    async fn rooms_with_new_notifications(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        self.current().rooms_with_new_notifications(user_id, room_ids, after, upto).await
    }

    async fn notifications(
        &self,
        query: NotificationsQuery,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.current().notifications(query).await
    }

    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()> {
        self.write(|s| async move { s.set_pusher(pusher, append).await }).await
    }

    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool> {
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        self.write(|s| async move { s.delete_pusher(&user_id, &app_id, &pushkey).await }).await
    }

    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>> {
        self.current().pushers(user_id).await
    }

    async fn delete_pushers(&self, user_id: &UserId, cleanup: PusherCleanup) -> StoreResult<u64> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.delete_pushers(&user_id, cleanup).await }).await
    }
}

#[async_trait]
impl ReceiptStore for SwitchableStore {
    async fn set_receipt(&self, receipt: NewReceipt) -> StoreResult<Option<i64>> {
        self.write(|s| async move { s.set_receipt(receipt).await }).await
    }

    async fn receipts(
        &self,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        self.current().receipts(room_ids, after, upto).await
    }
}

#[async_trait]
impl BackupStore for SwitchableStore {
    async fn create_backup_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> StoreResult<i64> {
        let (user_id, algorithm, auth_data) =
            (user_id.to_owned(), algorithm.to_owned(), auth_data.to_owned());
        self.write(
            |s| async move { s.create_backup_version(&user_id, &algorithm, &auth_data).await },
        )
        .await
    }

    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersionRecord>> {
        self.current().backup_version(user_id, version).await
    }

    async fn update_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &str,
    ) -> StoreResult<bool> {
        let (user_id, auth_data) = (user_id.to_owned(), auth_data.to_owned());
        self.write(|s| async move { s.update_backup_version(&user_id, version, &auth_data).await })
            .await
    }

    async fn delete_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<BackupDeletion> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.delete_backup_version(&user_id, version).await }).await
    }

    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: Vec<NewBackupKey>,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.put_backup_keys(&user_id, version, keys).await }).await
    }

    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<Option<Vec<BackupKeyRecord>>> {
        self.current().backup_keys(user_id, version, scope).await
    }

    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.delete_backup_keys(&user_id, version, scope).await }).await
    }
}

#[async_trait]
impl super::RoomSummaryStore for SwitchableStore {
    async fn member_summaries(
        &self,
        room_ids: &[OwnedRoomId],
        user_id: &UserId,
    ) -> StoreResult<std::collections::BTreeMap<OwnedRoomId, super::MemberSummary>> {
        self.current().member_summaries(room_ids, user_id).await
    }

    async fn current_state_events(
        &self,
        room_ids: &[OwnedRoomId],
        event_types: &[&str],
    ) -> StoreResult<Vec<EventRecord>> {
        self.current().current_state_events(room_ids, event_types).await
    }
}

#[async_trait]
impl UserDirectoryStore for SwitchableStore {
    async fn search_user_directory(
        &self,
        query: UserDirectoryQuery,
    ) -> StoreResult<Vec<DirectoryUser>> {
        self.current().search_user_directory(query).await
    }
}

#[async_trait]
impl super::SearchStore for SwitchableStore {
    async fn search_events(&self, query: super::SearchQuery) -> StoreResult<super::SearchPage> {
        self.current().search_events(query).await
    }
}

#[async_trait]
impl ReportStore for SwitchableStore {
    async fn add_report(&self, report: NewReport) -> StoreResult<i64> {
        self.write(|s| async move { s.add_report(report).await }).await
    }

    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<ReportRecord>> {
        self.current().reports(after, limit).await
    }
}

#[async_trait]
impl KeyStore for SwitchableStore {
    async fn set_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        key_json: &str,
    ) -> StoreResult<i64> {
        let (user_id, device_id, key_json) =
            (user_id.to_owned(), device_id.to_owned(), key_json.to_owned());
        self.write(|s| async move { s.set_device_keys(&user_id, &device_id, &key_json).await })
            .await
    }

    async fn device_keys(&self, user_id: &UserId) -> StoreResult<Vec<DeviceKeysRecord>> {
        self.current().device_keys(user_id).await
    }

    async fn add_one_time_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(|s| async move { s.add_one_time_keys(&user_id, &device_id, keys).await }).await
    }

    async fn set_fallback_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        keys: Vec<OneTimeKeyRecord>,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(|s| async move { s.set_fallback_keys(&user_id, &device_id, keys).await }).await
    }

    async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<BTreeMap<String, u64>> {
        self.current().one_time_key_counts(user_id, device_id).await
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> StoreResult<Vec<String>> {
        self.current().unused_fallback_key_types(user_id, device_id).await
    }

    async fn claim_key(
        &self,
        user_id: &UserId,
        device_id: &str,
        algorithm: &str,
    ) -> StoreResult<Option<OneTimeKeyRecord>> {
        let (user_id, device_id, algorithm) =
            (user_id.to_owned(), device_id.to_owned(), algorithm.to_owned());
        self.write(|s| async move { s.claim_key(&user_id, &device_id, &algorithm).await }).await
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: BTreeMap<String, String>,
    ) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.set_cross_signing_keys(&user_id, keys).await }).await
    }

    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<BTreeMap<String, String>> {
        self.current().cross_signing_keys(user_id).await
    }

    async fn add_key_signatures(
        &self,
        signatures: Vec<KeySignature>,
        changed: Vec<OwnedUserId>,
    ) -> StoreResult<i64> {
        self.write(|s| async move { s.add_key_signatures(signatures, changed).await }).await
    }

    async fn key_signatures(&self, target_user_id: &UserId) -> StoreResult<Vec<KeySignature>> {
        self.current().key_signatures(target_user_id).await
    }

    async fn mark_device_list_changed(&self, user_id: &UserId) -> StoreResult<i64> {
        let user_id = user_id.to_owned();
        self.write(|s| async move { s.mark_device_list_changed(&user_id).await }).await
    }

    async fn device_list_changes(&self, after: i64) -> StoreResult<Vec<(OwnedUserId, i64)>> {
        self.current().device_list_changes(after).await
    }

    async fn send_to_device(
        &self,
        txn: ToDeviceTxn,
        messages: Vec<NewToDevice>,
    ) -> StoreResult<Option<BTreeMap<OwnedUserId, i64>>> {
        self.write(|s| async move { s.send_to_device(txn, messages).await }).await
    }

    async fn to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> StoreResult<Vec<ToDeviceRecord>> {
        self.current().to_device_messages(user_id, device_id, after, upto, limit).await
    }

    async fn delete_to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        upto: i64,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(|s| async move { s.delete_to_device_messages(&user_id, &device_id, upto).await })
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
        self.write(|s| async move {
            s.set_dehydrated_device(&user_id, &device_id, name.as_deref(), &data).await
        })
        .await
    }

    async fn dehydrated_device(&self, user_id: &UserId) -> StoreResult<Option<(String, String)>> {
        self.current().dehydrated_device(user_id).await
    }
}

#[async_trait]
impl BusStore for SwitchableStore {
    async fn bus_append(&self, stream: &str, subject: &str, payload: &str) -> StoreResult<i64> {
        let (stream, subject, payload) =
            (stream.to_owned(), subject.to_owned(), payload.to_owned());
        self.write(|s| async move { s.bus_append(&stream, &subject, &payload).await }).await
    }

    async fn bus_read(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<BusMessage>> {
        self.current().bus_read(stream, after, limit).await
    }

    async fn bus_ack(&self, stream: &str, consumer: &str, sequence: i64) -> StoreResult<()> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        self.write(|s| async move { s.bus_ack(&stream, &consumer, sequence).await }).await
    }

    async fn bus_acked(&self, stream: &str, consumer: &str) -> StoreResult<i64> {
        self.current().bus_acked(stream, consumer).await
    }

    async fn bus_trim(&self, stream: &str, through: i64) -> StoreResult<u64> {
        let stream = stream.to_owned();
        self.write(|s| async move { s.bus_trim(&stream, through).await }).await
    }
}

#[async_trait]
impl MediaStore for SwitchableStore {
    async fn insert_media(&self, media: NewMedia) -> StoreResult<()> {
        self.write(|s| async move { s.insert_media(media).await }).await
    }

    async fn reserve_media(
        &self,
        reservation: MediaReservation,
        max_pending: u64,
    ) -> StoreResult<bool> {
        self.write(|s| async move { s.reserve_media(reservation, max_pending).await }).await
    }

    async fn fill_reserved_media(&self, media: NewMedia) -> StoreResult<bool> {
        self.write(|s| async move { s.fill_reserved_media(media).await }).await
    }

    async fn media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>> {
        self.current().media(media_id).await
    }

    async fn thumbnail(&self, key: &ThumbnailKey) -> StoreResult<Option<ThumbnailRecord>> {
        self.current().thumbnail(key).await
    }

    async fn insert_thumbnail(&self, thumbnail: ThumbnailRecord) -> StoreResult<()> {
        self.write(|s| async move { s.insert_thumbnail(thumbnail).await }).await
    }

    async fn url_preview(&self, url: &str, since_ts: i64) -> StoreResult<Option<String>> {
        self.current().url_preview(url, since_ts).await
    }

    async fn insert_url_preview(
        &self,
        preview: crate::store::media::UrlPreviewRecord,
        expired_before: i64,
    ) -> StoreResult<()> {
        self.write(|s| async move { s.insert_url_preview(preview, expired_before).await }).await
    }
}

#[async_trait]
impl TokenStore for SwitchableStore {
    async fn refresh_session(
        &self,
        refresh: RefreshSession,
    ) -> StoreResult<Option<RefreshedSession>> {
        self.write(|s| async move { s.refresh_session(refresh).await }).await
    }

    async fn first_use_of_access_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let token_hash = token_hash.to_owned();
        self.write(|s| async move { s.first_use_of_access_token(&token_hash).await }).await
    }

    async fn create_login_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(|s| async move { s.create_login_token(token).await }).await
    }

    async fn take_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let token_hash = token_hash.to_owned();
        self.write(|s| async move { s.take_login_token(&token_hash, now).await }).await
    }

    async fn create_openid_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(|s| async move { s.create_openid_token(token).await }).await
    }

    async fn openid_token_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        self.current().openid_token_user(token_hash, now).await
    }
}

#[async_trait]
impl ThreepidStore for SwitchableStore {
    async fn request_validation_session(
        &self,
        session: NewValidationSession,
    ) -> StoreResult<RequestedSession> {
        self.write(|s| async move { s.request_validation_session(session).await }).await
    }

    async fn validate_session_token(
        &self,
        sid: &str,
        client_secret_hash: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<TokenCheck> {
        let (sid, secret, token) =
            (sid.to_owned(), client_secret_hash.to_owned(), token_hash.to_owned());
        self.write(|s| async move { s.validate_session_token(&sid, &secret, &token, now).await })
            .await
    }

    async fn validation_session(&self, sid: &str) -> StoreResult<Option<ValidationSessionRecord>> {
        self.current().validation_session(sid).await
    }

    async fn delete_validation_session(&self, sid: &str) -> StoreResult<()> {
        let sid = sid.to_owned();
        self.write(|s| async move { s.delete_validation_session(&sid).await }).await
    }

    async fn add_threepid(&self, threepid: ThreepidRecord) -> StoreResult<bool> {
        self.write(|s| async move { s.add_threepid(threepid).await }).await
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        self.current().threepids(user_id).await
    }

    async fn threepid_user(&self, medium: &str, address: &str) -> StoreResult<Option<OwnedUserId>> {
        self.current().threepid_user(medium, address).await
    }

    async fn delete_threepid(
        &self,
        user_id: &UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<bool> {
        let (user_id, medium, address) =
            (user_id.to_owned(), medium.to_owned(), address.to_owned());
        self.write(|s| async move { s.delete_threepid(&user_id, &medium, &address).await }).await
    }

    async fn add_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(|s| async move { s.add_threepid_bind(bind).await }).await
    }

    async fn threepid_binds(
        &self,
        user_id: &UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<Vec<String>> {
        self.current().threepid_binds(user_id, medium, address).await
    }

    async fn delete_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(|s| async move { s.delete_threepid_bind(bind).await }).await
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId};
    use tokio::{sync::oneshot, task::JoinHandle};

    use super::SwitchableStore;
    use crate::store::{NewUser, RoomTxn, Store, UserStore, testing::TestDatabase};

    /// Long enough for a held write to have run if nothing held it.
    const SETTLE: Duration = Duration::from_millis(200);

    fn alice() -> OwnedUserId {
        OwnedUserId::try_from("@alice:localhost").unwrap()
    }

    fn room(name: &str) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!{name}:localhost")).unwrap()
    }

    fn new_user() -> NewUser {
        NewUser { user_id: alice(), password_hash: None, is_admin: false, created_ts: 1 }
    }

    /// Two empty databases and a switchable store on the first.
    struct Fixture {
        store: Arc<SwitchableStore>,
        old: Store,
        new: Store,
        _databases: (TestDatabase, TestDatabase),
    }

    async fn fixture() -> Fixture {
        let (old_db, new_db) = (TestDatabase::new().await, TestDatabase::new().await);
        let (old, new) = (old_db.open().await, new_db.open().await);
        let store = Arc::new(SwitchableStore::new(old.clone()));
        Fixture { store, old, new, _databases: (old_db, new_db) }
    }

    /// Creates alice through the switchable store, in a task of its own.
    fn spawn_create_user(store: &Arc<SwitchableStore>) -> JoinHandle<bool> {
        let store: Store = store.clone();
        tokio::spawn(async move { store.create_user(new_user()).await.unwrap() })
    }

    /// Starts a room job that creates `room_id` slowly; returns once the job runs in the writer.
    async fn spawn_slow_room_creation(store: &Store, room_id: OwnedRoomId) -> JoinHandle<()> {
        let (started, running) = oneshot::channel();
        let job = Box::new(move |txn: &dyn RoomTxn| {
            let _ = started.send(());
            std::thread::sleep(Duration::from_millis(300));
            txn.create_room(&room_id, &RoomVersionId::V12, 0)?;
            Ok(Vec::new())
        });
        let store = store.clone();
        let task = tokio::spawn(async move {
            store.write_rooms(job).await.unwrap();
        });
        running.await.unwrap();
        task
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_held_by_the_pause_lands_in_the_new_store_after_the_switch() {
        let f = fixture().await;
        let pause = f.store.pause_writes().await;
        let write = spawn_create_user(&f.store);
        tokio::time::sleep(SETTLE).await;
        assert!(!write.is_finished(), "the write waits while writes are paused");

        pause.switch_to(f.new.clone());
        assert!(write.await.unwrap(), "the write succeeds");
        assert!(f.new.user(&alice()).await.unwrap().is_some(), "it reached the new store");
        assert!(f.old.user(&alice()).await.unwrap().is_none(), "and not the old one");
        assert!(f.store.user(&alice()).await.unwrap().is_some(), "reads use the new store");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reads_are_answered_while_writes_are_paused_and_held() {
        let f = fixture().await;
        f.store.create_user(new_user()).await.unwrap();
        let pause = f.store.pause_writes().await;
        let held = f.store.clone();
        let write = tokio::spawn(async move { held.set_displayname(&alice(), Some("A")).await });
        tokio::time::sleep(SETTLE).await;

        let read = tokio::time::timeout(Duration::from_secs(10), f.store.user(&alice())).await;
        let user = read.expect("a read does not wait for the pause").unwrap().unwrap();
        assert_eq!(user.displayname, None, "the held write has not run");
        assert_eq!(f.store.count_users().await.unwrap(), 1);
        assert!(!write.is_finished(), "the write is still held");
        drop(pause);
        write.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_in_flight_finishes_on_the_old_store_before_the_pause_begins() {
        let f = fixture().await;
        let store: Store = f.store.clone();
        let write = spawn_slow_room_creation(&store, room("slow")).await;

        let pause = f.store.pause_writes().await;
        let version = f.old.room_version(&room("slow")).await.unwrap();
        assert_eq!(version, Some(RoomVersionId::V12), "the write committed before the pause");
        pause.switch_to(f.new.clone());
        write.await.unwrap();
        assert_eq!(f.new.room_version(&room("slow")).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_whose_caller_gave_up_still_finishes_before_the_pause_begins() {
        let f = fixture().await;
        let store: Store = f.store.clone();
        let caller = spawn_slow_room_creation(&store, room("abandoned")).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());

        let _pause = f.store.pause_writes().await;
        let version = f.old.room_version(&room("abandoned")).await.unwrap();
        assert_eq!(
            version,
            Some(RoomVersionId::V12),
            "the old writer committed it before the pause"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_the_pause_releases_the_writes_onto_the_old_store() {
        let f = fixture().await;
        let pause = f.store.pause_writes().await;
        let write = spawn_create_user(&f.store);
        tokio::time::sleep(SETTLE).await;
        assert!(!write.is_finished(), "the write waits while writes are paused");

        drop(pause);
        assert!(write.await.unwrap());
        assert!(f.old.user(&alice()).await.unwrap().is_some(), "it reached the old store");
        assert!(f.new.user(&alice()).await.unwrap().is_none());
        assert!(Arc::ptr_eq(&f.store.current(), &f.old), "the old store is still current");
    }
}
