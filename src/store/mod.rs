//! The storage API: every table Hearth keeps, behind traits that the SQLite and the
//! PostgreSQL backends implement.
//!
//! Nothing outside this module sees SQL or a database driver type. Operations are grouped by area
//! ([`UserStore`], [`RoomStore`], [`RoomSummaryStore`], [`ReceiptStore`], [`KeyStore`],
//! [`BackupStore`], [`UserDirectoryStore`], [`ReportStore`], [`MediaStore`], [`PushStore`],
//! [`SearchStore`], [`TokenStore`], [`ThreepidStore`], [`BusStore`]); [`Store`] is the handle the
//! rest of the server holds. Writes that must see a consistent room (building and persisting an
//! event) run as one closure against a [`RoomTxn`] inside the backend's single writer, so
//! concurrent sends to one room are serialized without an async lock and still commit together.
//!
//! The room state after every event is kept as state groups ([`StateGroupDelta`], assembled by
//! [`state_of_group`]); which group an event gets and how the current state changes is decided by
//! `crate::rooms::state` and handed to [`RoomTxn::append_event`], never derived here.

mod keys;
pub mod media;
#[cfg(feature = "postgres")]
mod postgres;
mod push_sql;
mod schema;
pub mod search;
mod shared;
mod sqlite;
pub mod summaries;
pub mod switch;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod threepids;
pub mod tokens;
#[cfg(feature = "postgres")]
pub mod transfer;
pub mod types;

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use ruma::{
    EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};
use serde_json::value::RawValue;

pub use self::{
    keys::*,
    media::*,
    search::{NewSearchText, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore},
    summaries::{MemberSummary, RoomSummaryStore},
    threepids::{
        NewValidationSession, RequestedSession, ThreepidBind, ThreepidRecord, ThreepidStore,
        TokenCheck, ValidationSessionRecord,
    },
    tokens::{NewExpiringToken, RefreshSession, RefreshedSession, TokenStore},
    types::*,
};

/// A storage failure. Always an internal error: client mistakes are caught before the store.
pub type StoreResult<T> = anyhow::Result<T>;

/// The handle to the storage backend shared by all components.
pub type Store = Arc<dyn Storage>;

/// Opens (and migrates) the SQLite database at `path`.
pub fn open_sqlite(path: &Path) -> StoreResult<Store> {
    Ok(Arc::new(sqlite::SqliteStore::open(path)?))
}

/// Connects to (and migrates) the PostgreSQL database at `url`.
#[cfg(feature = "postgres")]
pub async fn open_postgres(url: &str) -> StoreResult<Store> {
    Ok(Arc::new(postgres::PostgresStore::open(url).await?))
}

/// The database cannot be reached just now (PostgreSQL down, restarting, or out of
/// connections). Clients get a 503 and may retry; nothing acknowledged was lost.
#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable: {0}")]
pub struct Unavailable(pub String);

/// Whether a storage failure is [`Unavailable`] somewhere in its chain of causes.
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Unavailable>())
}

/// Everything a backend provides.
pub trait Storage:
    UserStore
    + RoomStore
    + RoomSummaryStore
    + ReceiptStore
    + KeyStore
    + BackupStore
    + UserDirectoryStore
    + ReportStore
    + MediaStore
    + PushStore
    + SearchStore
    + TokenStore
    + ThreepidStore
    + BusStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Storage for T where
    T: UserStore
        + RoomStore
        + RoomSummaryStore
        + ReceiptStore
        + KeyStore
        + BackupStore
        + UserDirectoryStore
        + ReportStore
        + MediaStore
        + PushStore
        + SearchStore
        + TokenStore
        + ThreepidStore
        + BusStore
        + Send
        + Sync
        + 'static
{
}

/// Accounts, devices, access tokens, profiles, account data and filters.
#[async_trait]
pub trait UserStore {
    /// Creates an account. Returns `false` if the user ID is taken.
    async fn create_user(&self, user: NewUser) -> StoreResult<bool>;
    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;
    async fn count_users(&self) -> StoreResult<u64>;
    async fn set_password_hash(&self, user_id: &UserId, password_hash: &str) -> StoreResult<()>;
    /// Marks the account deactivated and removes its devices, tokens (access, refresh, login and
    /// OpenID), profile (custom fields included) and third-party identifiers (with their
    /// identity server binds).
    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()>;
    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()>;
    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()>;

    /// Creates (or reuses) a device and gives it a new access token, and a refresh token if the
    /// session has one; a reused device's older access and refresh tokens are revoked.
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;
    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>>;
    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>>;
    /// Returns `false` if the device does not exist.
    async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool>;
    /// Deletes devices and their tokens; returns the hashes of the revoked tokens.
    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> StoreResult<Vec<String>>;
    /// Deletes every device except `keep`; returns the hashes of the revoked tokens.
    async fn delete_all_devices(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<Vec<String>>;
    /// Records a device's last request (address, user agent, time).
    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        seen: DeviceSeen,
    ) -> StoreResult<()>;
    /// Locks or unlocks an account.
    async fn set_locked(&self, user_id: &UserId, locked: bool) -> StoreResult<()>;
    /// Suspends an account or lifts its suspension.
    async fn set_suspended(&self, user_id: &UserId, suspended: bool) -> StoreResult<()>;

    /// The profile fields besides `displayname` and `avatar_url`, as (name, JSON text) pairs in
    /// name order.
    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>>;
    /// Sets one such field to a JSON value, replacing what it held.
    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: &str,
    ) -> StoreResult<()>;
    /// Removes one such field; nothing happens if it is not set.
    async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> StoreResult<()>;

    /// Stores account data (`room_id` `None`: global) at a new stream position.
    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
    ) -> StoreResult<i64>;
    async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StoreResult<Option<Box<RawValue>>>;
    /// Account data changed after `since` (all of it when `since` is 0).
    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: i64,
    ) -> StoreResult<Vec<AccountDataRecord>>;

    async fn create_filter(&self, user_id: &UserId, filter: &str) -> StoreResult<i64>;
    async fn filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<String>>;
}

/// Rooms, the event graph, state, aliases and the directory.
#[async_trait]
pub trait RoomStore {
    /// Runs `job` in the single writer against a consistent view of the rooms, committing
    /// everything it wrote, or nothing if it fails.
    async fn write_rooms(&self, job: RoomJob) -> crate::Result<Vec<AppendedEvent>>;

    /// The latest stream position handed out.
    async fn current_position(&self) -> StoreResult<i64>;
    async fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>>;
    async fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>>;
    async fn events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<EventRecord>>;
    /// The event a client transaction produced, if it was already sent.
    async fn transaction_event(&self, key: &TransactionKey) -> StoreResult<Option<OwnedEventId>>;
    /// The transaction IDs a device used for any of `event_ids`: event ID → transaction ID.
    async fn transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &str,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<std::collections::BTreeMap<OwnedEventId, String>>;

    /// The current state of a room.
    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>>;
    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>>;
    /// The state of a room as it was after the event at stream position `at`.
    async fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<EventRecord>>;
    /// Every value a state key had, oldest first.
    async fn state_key_history(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Vec<EventRecord>>;
    /// State events that changed in `(from, to]`.
    async fn state_changes(
        &self,
        room_id: &RoomId,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<EventRecord>>;
    /// A user's membership in a room at stream position `at` (the latest when `None`).
    async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<i64>,
    ) -> StoreResult<Option<MembershipRecord>>;
    /// Every room in which the user has a current membership.
    async fn memberships_of(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>>;
    /// The members of a room with the given membership.
    async fn members_with(
        &self,
        room_id: &RoomId,
        membership: &str,
    ) -> StoreResult<Vec<OwnedUserId>>;
    /// Events of a room, paging from a stream position in the given direction.
    async fn room_events(&self, query: RoomEventsQuery) -> StoreResult<Vec<EventRecord>>;
    /// Rooms with at least one event or membership change in `(from, to]`.
    async fn rooms_changed(
        &self,
        room_ids: &[OwnedRoomId],
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<OwnedRoomId>>;

    /// Events of a room by their `origin_server_ts`, nearest to the query's time first.
    async fn events_by_timestamp(&self, query: TimestampQuery) -> StoreResult<Vec<EventRecord>>;
    /// Thread roots of a room, the most recently active first.
    async fn thread_roots(&self, query: ThreadsQuery) -> StoreResult<Vec<ThreadRoot>>;
    /// What to bundle with each of `parents` that has relations (threads, edits, references);
    /// parents without any are left out. `user_id` is who asks (thread participation).
    async fn relation_summaries(
        &self,
        parents: &[OwnedEventId],
        user_id: &UserId,
    ) -> StoreResult<std::collections::BTreeMap<OwnedEventId, RelationSummary>>;

    async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()>;
    async fn forgotten_rooms(&self, user_id: &UserId) -> StoreResult<Vec<OwnedRoomId>>;

    /// Returns `false` if the alias exists already.
    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<bool>;
    async fn alias(&self, alias: &RoomAliasId) -> StoreResult<Option<AliasRecord>>;
    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool>;
    /// The local aliases that point to a room, sorted.
    async fn room_aliases(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>>;
    async fn set_published(&self, room_id: &RoomId, published: bool) -> StoreResult<()>;
    async fn is_published(&self, room_id: &RoomId) -> StoreResult<bool>;
    async fn published_rooms(&self) -> StoreResult<Vec<OwnedRoomId>>;
    /// Lists or unlists a room in an application service's directory of a network.
    async fn set_appservice_published(
        &self,
        listing: AppserviceListing,
        published: bool,
    ) -> StoreResult<()>;
    /// The rooms application services published, in the directory of one network or of all.
    async fn appservice_published_rooms(
        &self,
        network_id: Option<&str>,
    ) -> StoreResult<Vec<OwnedRoomId>>;
}

/// A room in an application service's directory of one third-party network.
#[derive(Clone, Debug)]
pub struct AppserviceListing {
    pub appservice_id: String,
    pub network_id: String,
    pub room_id: OwnedRoomId,
}

/// Read receipts.
#[async_trait]
pub trait ReceiptStore {
    /// Records a receipt at a new stream position, unless the user's receipt of that type and
    /// thread in that room is already at the same or a later event: then nothing changes and
    /// the answer is `None`.
    async fn set_receipt(&self, receipt: NewReceipt) -> StoreResult<Option<i64>>;
    /// The receipts of these rooms that changed in `(after, upto]` of the stream.
    async fn receipts(
        &self,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<ReceiptRecord>>;
}

/// Server-side key backups: a user's backup versions and the room keys stored in them.
///
/// Keys go only into the user's latest version. A key for a session the version holds already
/// replaces the stored one only if it is better, by the spec's rule (client-server API, "Server-side
/// key backups"): a verified key beats an unverified one, then the lower `first_message_index`
/// wins, then the lower `forwarded_count`; on a tie the stored key stays. A version's etag changes
/// exactly when its stored keys do.
#[async_trait]
pub trait BackupStore {
    /// Creates a version numbered after every version the user ever had, deleted ones included.
    async fn create_backup_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> StoreResult<i64>;
    /// A version that exists (the latest when `version` is `None`).
    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersionRecord>>;
    /// Replaces a version's `auth_data`; `false` if the version does not exist.
    async fn update_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &str,
    ) -> StoreResult<bool>;
    /// Deletes a version and its keys.
    async fn delete_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<BackupDeletion>;
    /// Stores keys in the version, if it is the latest, each replacing a stored key of the same
    /// session only if it is better.
    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: Vec<NewBackupKey>,
    ) -> StoreResult<BackupKeysChange>;
    /// The keys of an existing version in the scope, by room and session; `None` if the version
    /// does not exist.
    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<Option<Vec<BackupKeyRecord>>>;
    /// Deletes the keys of an existing version in the scope.
    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<BackupKeysChange>;
}

/// The user directory: local users a user may find.
#[async_trait]
pub trait UserDirectoryStore {
    /// Local, active users whose user ID localpart or display name contains the term (ignoring
    /// case) and who share a joined room with the searcher or are joined to a room published in
    /// the room directory; ordered by user ID, at most `limit` of them.
    async fn search_user_directory(
        &self,
        query: UserDirectoryQuery,
    ) -> StoreResult<Vec<DirectoryUser>>;
}

/// Reports of content to the server's administrators.
#[async_trait]
pub trait ReportStore {
    /// Stores a report; returns its number, higher than every earlier report's.
    async fn add_report(&self, report: NewReport) -> StoreResult<i64>;
    /// Reports numbered after `after`, oldest first, at most `limit`.
    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<ReportRecord>>;
}

/// Push notifications: what push rules found for each event and user, and the pushers.
#[async_trait]
pub trait PushStore {
    /// Records the notifications one event gave, all at one new stream position (returned), so
    /// that the counts they change show in the next incremental sync.
    async fn add_notifications(&self, notifications: Vec<NewNotification>) -> StoreResult<i64>;
    /// The user's unread notifications per room and thread: those after the user's latest read
    /// receipt (`m.read` or `m.read.private`) of the thread or the unthreaded one, and after the
    /// user's current membership event in the room. Threads with none are left out.
    async fn notification_counts(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
    ) -> StoreResult<Vec<NotificationCount>>;
    /// The rooms among `room_ids` where notifications of the user were recorded in
    /// `(after, upto]` of the stream.
    async fn rooms_with_new_notifications(
        &self,
        user_id: &UserId,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<OwnedRoomId>>;
    /// A page of the user's notifications, newest first.
    async fn notifications(
        &self,
        query: NotificationsQuery,
    ) -> StoreResult<Vec<NotificationRecord>>;

    /// Creates or replaces the user's pusher of that app ID and pushkey; unless `append`,
    /// removes the pushers of other users with the same app ID and pushkey.
    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> StoreResult<()>;
    /// Returns `false` if the user had no such pusher.
    async fn delete_pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> StoreResult<bool>;
    async fn pushers(&self, user_id: &UserId) -> StoreResult<Vec<PusherRecord>>;
    /// Deletes some of the user's pushers (see [`PusherCleanup`]); returns how many.
    async fn delete_pushers(&self, user_id: &UserId, cleanup: PusherCleanup) -> StoreResult<u64>;
}

/// Which pushers [`PushStore::delete_pushers`] removes.
#[derive(Clone, Debug)]
pub enum PusherCleanup {
    /// Those whose device no longer exists (after devices were deleted).
    DevicesGone,
    /// Every pusher but those set with this device (after a password change).
    AllBut(String),
}

/// Durable streams of the bus: ordered messages and consumer acknowledgements.
#[async_trait]
pub trait BusStore {
    /// Appends a message to a stream; returns its sequence number.
    async fn bus_append(&self, stream: &str, subject: &str, payload: &str) -> StoreResult<i64>;
    /// Messages of a stream after `after`, oldest first.
    async fn bus_read(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<BusMessage>>;
    async fn bus_ack(&self, stream: &str, consumer: &str, sequence: i64) -> StoreResult<()>;
    async fn bus_acked(&self, stream: &str, consumer: &str) -> StoreResult<i64>;
    /// Deletes the stream's messages up to `through`, except its last message, whose sequence
    /// the next message's follows (so that no sequence is ever given twice). Returns how many
    /// were deleted.
    async fn bus_trim(&self, stream: &str, through: i64) -> StoreResult<u64>;
}

/// A consistent, writable view of the rooms, used inside [`RoomStore::write_rooms`].
///
/// Reads see the writes made earlier in the same job.
pub trait RoomTxn {
    fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>>;
    fn create_room(&self, room_id: &RoomId, version: &RoomVersionId, ts: i64) -> StoreResult<()>;
    fn forward_extremities(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>>;
    fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>>;
    fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>>;
    fn transaction_event(&self, txn: &TransactionKey) -> StoreResult<Option<OwnedEventId>>;
    /// The whole current state of a room.
    fn current_state_map(&self, room_id: &RoomId) -> StoreResult<StateMap>;
    /// The state group holding the state after an event (`None` for an unknown event).
    fn event_state_group(&self, event_id: &EventId) -> StoreResult<Option<i64>>;
    /// One state group as stored; [`state_of_group`] assembles its whole state.
    fn state_group_delta(&self, state_group: i64) -> StoreResult<Option<StateGroupDelta>>;
    /// Appends an accepted event at the next stream position, with its state group (a new one is
    /// numbered with that position), the new forward extremities (the event replaces its prev
    /// events) and the changes of the current state it brings. Returns the stream position.
    fn append_event(&self, event: NewEvent) -> StoreResult<i64>;
    /// Replaces an event's stored PDU with its redacted form.
    fn redact_event(
        &self,
        event_id: &EventId,
        redacted_pdu: &str,
        redacted_by: &EventId,
    ) -> StoreResult<()>;
}

/// The whole state a state group holds: its snapshot with the deltas above it applied in order.
/// Reads at most one group per link of the chain, which writers keep shorter than
/// [`MAX_STATE_CHAIN`].
pub fn state_of_group(txn: &dyn RoomTxn, state_group: i64) -> StoreResult<StateMap> {
    let mut chain = Vec::new();
    let mut next = Some(state_group);
    while let Some(group) = next {
        let delta = txn
            .state_group_delta(group)?
            .ok_or_else(|| anyhow::anyhow!("state group {group} is missing"))?;
        if chain.len() > MAX_STATE_CHAIN as usize {
            anyhow::bail!("state group {state_group} has a chain longer than {MAX_STATE_CHAIN}");
        }
        next = delta.parent;
        chain.push(delta);
    }
    let mut state = StateMap::new();
    for delta in chain.into_iter().rev() {
        for entry in delta.entries {
            let key = (entry.event_type, entry.state_key);
            match entry.event_id {
                Some(event_id) => state.insert(key, event_id),
                None => state.remove(&key),
            };
        }
    }
    Ok(state)
}

/// A state group is a snapshot when its chain of deltas would reach this length (the V3
/// migration uses the same number).
pub const MAX_STATE_CHAIN: i64 = 32;

/// A room job's refusal carried through a backend's writer as a store error, so that the job's
/// savepoint rolls back while the batch it shares goes on; [`job_verdict`] unwraps it again.
#[derive(Debug, thiserror::Error)]
#[error("room job refused: {0}")]
pub(crate) struct JobRefused(crate::Error);

/// A room job's result as the writer takes it: a refusal becomes an error that rolls back.
pub(crate) fn job_result(
    result: crate::Result<Vec<AppendedEvent>>,
) -> StoreResult<crate::Result<Vec<AppendedEvent>>> {
    match result {
        Ok(appended) => Ok(Ok(appended)),
        Err(error) => Err(anyhow::Error::new(JobRefused(error))),
    }
}

/// The job's own verdict from the writer's outcome: its refusal as it was, anything else that
/// failed as an internal error.
pub(crate) fn job_verdict(
    outcome: StoreResult<crate::Result<Vec<AppendedEvent>>>,
) -> crate::Result<Vec<AppendedEvent>> {
    match outcome {
        Ok(result) => result,
        Err(error) => match error.downcast::<JobRefused>() {
            Ok(JobRefused(error)) => Err(error),
            Err(error) => Err(crate::Error::Internal(error)),
        },
    }
}

/// A closure run by [`RoomStore::write_rooms`]: it returns the events it appended, or the error
/// that stopped it (and then none of its writes are kept).
pub type RoomJob =
    Box<dyn FnOnce(&dyn RoomTxn) -> crate::Result<Vec<AppendedEvent>> + Send + 'static>;
