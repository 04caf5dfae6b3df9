//! The typed values the storage API takes and returns. Plain data: no SQL, no behaviour.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId};
use serde_json::value::RawValue;

/// An account to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub user_id: OwnedUserId,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub created_ts: i64,
}

/// A stored account.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user_id: OwnedUserId,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Locked by an administrator: no request but logout is served.
    pub locked: bool,
    /// Suspended by an administrator: actions that reach other users are refused.
    pub suspended: bool,
}

/// What an administrator has restricted of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountRestrictions {
    pub locked: bool,
    pub suspended: bool,
}

/// A login: a device (new or reused) and its new access token.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// Set only when given; a reused device keeps its name otherwise.
    pub display_name: Option<String>,
    pub token_hash: String,
    pub created_ts: i64,
    /// When the access token stops working (ms since the epoch); `None`: never.
    pub expires_ts: Option<i64>,
    /// The hash of a refresh token to store with it (the client asked for one).
    pub refresh_token_hash: Option<String>,
}

/// Who an access token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// The account's restrictions when the token was resolved.
    pub restrictions: AccountRestrictions,
    /// When the token stops working (ms since the epoch); `None`: never.
    pub expires_ts: Option<i64>,
    /// The token came from a refresh whose refresh token still works: its first use revokes that
    /// one (`TokenStore::first_use_of_access_token`).
    pub first_use_revokes: bool,
}

/// A stored device.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
    /// The `User-Agent` of the device's last recorded request, if it sent one.
    pub last_seen_user_agent: Option<String>,
}

/// A device's last recorded request: when, from where and with which client.
#[derive(Clone, Debug)]
pub struct DeviceSeen {
    pub ip: String,
    pub user_agent: Option<String>,
    pub ts: i64,
}

/// One piece of account data.
#[derive(Clone, Debug)]
pub struct AccountDataRecord {
    /// `None` for global account data.
    pub room_id: Option<OwnedRoomId>,
    pub data_type: String,
    pub content: Box<RawValue>,
    pub stream_position: i64,
}

/// A stored event: the PDU and the columns indexed beside it.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub stream_position: i64,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: OwnedUserId,
    pub origin_server_ts: i64,
    pub depth: i64,
    /// The PDU as canonical JSON (redacted if a redaction applied).
    pub pdu: String,
    pub redacted_by: Option<OwnedEventId>,
    /// For state events: the state event this one replaced, if any.
    pub replaces_state: Option<OwnedEventId>,
}

/// A user's membership in a room, and the event that set it.
#[derive(Clone, Debug)]
pub struct MembershipRecord {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub membership: String,
    pub event_id: OwnedEventId,
    pub stream_position: i64,
}

/// Which way to page through a room's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, starting after `from`.
    Forward,
    /// Newest first, starting before `from`.
    Backward,
}

/// A page of a room's events.
#[derive(Clone, Debug)]
pub struct RoomEventsQuery {
    pub room_id: OwnedRoomId,
    /// Exclusive start position.
    pub from: i64,
    /// Exclusive bound on the other side, if any.
    pub to: Option<i64>,
    pub direction: Direction,
    pub limit: usize,
    /// Only these event types, when set.
    pub types: Option<Vec<String>>,
    /// Never these event types.
    pub not_types: Vec<String>,
    /// Only these senders, when set.
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    /// Only events that relate to this event, when set (`/relations`).
    pub relates_to: Option<RelationFilter>,
}

/// A room's events nearest to a time (`/timestamp_to_event`): from `ts` on (forward) or up to
/// it (backward), nearest first.
#[derive(Clone, Debug)]
pub struct TimestampQuery {
    pub room_id: OwnedRoomId,
    pub ts: i64,
    pub direction: Direction,
    /// Skip this many of the nearest (paging over events the user may not see).
    pub offset: usize,
    pub limit: usize,
}

/// Events relating to one event, optionally by one relation type only.
#[derive(Clone, Debug)]
pub struct RelationFilter {
    pub event_id: OwnedEventId,
    pub rel_type: Option<String>,
    /// 1: only events relating to the event itself; more: also events relating to those, down
    /// to this many levels (`recurse`).
    pub depth: u32,
}

/// What a new event's content says it relates to (`m.relates_to` with a `rel_type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRelation {
    pub relates_to: OwnedEventId,
    pub rel_type: String,
}

/// A page of a room's thread roots, latest activity first (`/threads`).
#[derive(Clone, Debug)]
pub struct ThreadsQuery {
    pub room_id: OwnedRoomId,
    /// Only threads this user took part in (sent the root or a reply), when set.
    pub participant: Option<OwnedUserId>,
    /// Only threads whose latest reply is before this stream position, when set.
    pub before: Option<i64>,
    pub limit: usize,
}

/// A thread root and the stream position of the latest event in the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRoot {
    pub root: OwnedEventId,
    pub latest_position: i64,
}

/// The relations the server bundles into an event's `unsigned.m.relations`.
#[derive(Clone, Debug, Default)]
pub struct RelationSummary {
    pub thread: Option<ThreadSummary>,
    /// The replacements (edits) of the event by its own sender with its own type, oldest first.
    pub replacements: Vec<EventRecord>,
    /// The events that reference it (`m.reference`), oldest first.
    pub references: Vec<OwnedEventId>,
}

/// A thread as seen from its root.
#[derive(Clone, Debug)]
pub struct ThreadSummary {
    pub count: u64,
    pub latest_event: EventRecord,
    /// Whether the asking user sent the root or a reply.
    pub participated: bool,
}

/// A room alias and where it points.
#[derive(Clone, Debug)]
pub struct AliasRecord {
    pub alias: OwnedRoomAliasId,
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

/// A message of a durable bus stream.
#[derive(Clone, Debug)]
pub struct BusMessage {
    pub sequence: i64,
    pub subject: String,
    pub payload: String,
}

/// A client transaction: the same key returns the same event.
#[derive(Clone, Debug)]
pub struct TransactionKey {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// The endpoint and its path arguments, e.g. `["send","!room","m.room.message"]`: the spec scopes
    /// transaction IDs to a device and an endpoint.
    pub scope: String,
    pub txn_id: String,
}

/// An accepted event to append to its room.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: OwnedUserId,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub prev_events: Vec<OwnedEventId>,
    pub pdu: String,
    pub transaction: Option<TransactionKey>,
    /// For state events: the event of the same key in the state before this one, if any.
    pub replaces_state: Option<OwnedEventId>,
    /// What the event relates to, if anything (threads, edits, references, annotations).
    pub relation: Option<NewRelation>,
    /// What the event puts into the search index, if anything (see `crate::search::text_of`).
    pub search: Option<super::NewSearchText>,
    /// The room state after this event.
    pub state_group: NewStateGroup,
    /// How the room's current state changes with this event: for a linear room, this event's own
    /// key (or nothing for a message); after a fork, whatever state resolution changed.
    pub current_state: Vec<CurrentStateChange>,
}

/// A room state: (event type, state key) → event ID. Ordered, so that iteration and diffs are
/// deterministic.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

/// Where the state after a new event is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewStateGroup {
    /// In an existing group: the event changed nothing (a message on a single prev event).
    Existing(i64),
    /// In a new group, numbered with the event's stream position.
    New(StateGroupDelta),
}

/// A state group as stored: its parent and the entries it changes against it (all of its state
/// for a snapshot, which has no parent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateGroupDelta {
    pub parent: Option<i64>,
    /// How many deltas lead down to the snapshot: 0 for a snapshot.
    pub chain_length: i64,
    pub entries: Vec<StateEntry>,
}

/// One entry of a state group: `event_id` `None` removes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    pub event_type: String,
    pub state_key: String,
    pub event_id: Option<OwnedEventId>,
}

/// One change of a room's current state. `event_id` `None` removes the key; `membership` is the
/// membership an `m.room.member` event sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentStateChange {
    pub event_type: String,
    pub state_key: String,
    pub event_id: Option<OwnedEventId>,
    pub membership: Option<String>,
}

/// An event appended by a room job.
#[derive(Clone, Debug)]
pub struct AppendedEvent {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub stream_position: i64,
    /// For state events: the state key (for `m.room.member`, the user whose membership changed).
    pub state_key: Option<String>,
    pub event_type: String,
    /// For `m.room.member`: the new membership.
    pub membership: Option<String>,
}

/// A read receipt to record.
#[derive(Clone, Debug)]
pub struct NewReceipt {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    /// `m.read` or `m.read.private`.
    pub receipt_type: String,
    /// `None` for an unthreaded receipt; `main` or a thread root's event ID otherwise.
    pub thread_id: Option<String>,
    pub event_id: OwnedEventId,
    /// The stream position of the event read.
    pub event_position: i64,
    pub ts: i64,
}

/// A stored read receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub receipt_type: String,
    pub thread_id: Option<String>,
    pub event_id: OwnedEventId,
    pub ts: i64,
    pub stream_position: i64,
}

/// A backup version of a user's room keys, with what its keys add up to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupVersionRecord {
    pub version: i64,
    pub algorithm: String,
    /// The algorithm's `auth_data` object as JSON.
    pub auth_data: String,
    pub counts: BackupCounts,
}

/// How many keys a backup version holds, and its etag: a number that changes whenever its keys
/// change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupCounts {
    pub count: u64,
    pub etag: i64,
}

/// What deleting a backup version found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupDeletion {
    Deleted,
    /// It was deleted before.
    AlreadyDeleted,
    /// The user never had this version.
    Unknown,
}

/// The outcome of a change to the keys of a backup version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKeysChange {
    /// Done; the version's keys add up to this now.
    Done(BackupCounts),
    /// The version does not exist (never, or not any more).
    NoSuchVersion,
    /// Keys go only into the latest version, which is this one.
    NotLatest { latest: i64 },
}

/// A room key to back up: which session, how good the key is, and the client's whole
/// `KeyBackupData` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBackupKey {
    pub room_id: OwnedRoomId,
    pub session_id: String,
    pub is_verified: bool,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    /// The `KeyBackupData` object as JSON.
    pub key_data: String,
}

/// A stored room key of a backup version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKeyRecord {
    pub room_id: OwnedRoomId,
    pub session_id: String,
    /// The `KeyBackupData` object as JSON.
    pub key_data: String,
}

/// Which keys of a backup version an operation reads or deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupKeysScope {
    All,
    Room(OwnedRoomId),
    Session(OwnedRoomId, String),
}

/// A search of the user directory.
#[derive(Clone, Debug)]
pub struct UserDirectoryQuery {
    pub searcher: OwnedUserId,
    /// Matched case-insensitively anywhere in a user ID's localpart or a display name.
    pub term: String,
    /// At most this many users come back.
    pub limit: usize,
}

/// A user found in the user directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// A report of content to the server's administrators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReport {
    pub reporter: OwnedUserId,
    pub target: ReportTarget,
    pub reason: Option<String>,
    pub received_ts: i64,
}

/// What a report is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportTarget {
    Event(OwnedRoomId, OwnedEventId),
    Room(OwnedRoomId),
    User(OwnedUserId),
}

/// A stored report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    pub report_id: i64,
    pub report: NewReport,
}

/// An event that notified a user, as push rule evaluation found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// The stream position of the event.
    pub stream_position: i64,
    /// `main`, or the thread root's event ID for an event in a thread.
    pub thread_id: String,
    pub highlight: bool,
    /// The push actions as JSON.
    pub actions: String,
    pub ts: i64,
}

/// A stored notification, with whether the user has read its event since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRecord {
    pub notification: NewNotification,
    /// Whether a read receipt of the user is at or after the event.
    pub read: bool,
}

/// A user's unread notifications in one thread of a room (`main` for the main timeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationCount {
    pub room_id: OwnedRoomId,
    pub thread_id: String,
    pub notifications: u64,
    pub highlights: u64,
}

/// Which notifications a page of `GET /notifications` holds.
#[derive(Clone, Debug)]
pub struct NotificationsQuery {
    pub user_id: OwnedUserId,
    /// Only notifications of events before this stream position (the latest when `None`).
    pub before: Option<i64>,
    pub limit: usize,
    pub only_highlight: bool,
}

/// A pusher as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PusherRecord {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    /// `http`.
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    /// `None` when the client gave none.
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON.
    pub data: String,
    /// The device whose access token set the pusher.
    pub device_id: String,
    pub created_ts: i64,
}
