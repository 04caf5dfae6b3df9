//! Registers and logs users in, shares rooms between them, syncs, sends and reads messages
//! through `matrix-sdk`.
//!
//! Every client is fresh and keeps its state in memory: registering logs the registering client
//! in, so logins always use a new [`Client`]. Each helper names the endpoint it calls in its
//! error context, so that a failure says which request the server refused.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use matrix_sdk::{
    Client, Room, RoomState,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::TimelineEvent,
    room::MessagesOptions,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
        api::client::{
            account::register,
            filter::FilterDefinition,
            room::{Visibility, create_room},
            sync::sync_events::v3::Filter,
            uiaa::{AuthData, AuthType, Dummy},
        },
        events::{
            AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
            SyncStateEvent,
            room::{member::MembershipState, message::RoomMessageEventContent},
        },
    },
    sync::SyncResponse,
};

/// The long-poll timeout of each `/sync` request.
const SYNC_POLL: Duration = Duration::from_secs(2);

/// How many timeline events a sync returns per room at most.
const SYNC_TIMELINE_LIMIT: u32 = 50;

/// How many events each `/messages` page asks for.
pub const PAGE_SIZE: u32 = 50;

/// The safety bound on `/messages` pages, against a server that never ends pagination.
const MAX_PAGES: usize = 1_000;

/// The password every test user gets.
pub fn password(localpart: &str) -> String {
    format!("password-{localpart}")
}

/// The full user ID of `localpart` on a server named `server_name`.
pub fn user_id(localpart: &str, server_name: &str) -> anyhow::Result<OwnedUserId> {
    UserId::parse(format!("@{localpart}:{server_name}")).context("invalid user ID")
}

/// A new, logged-out client for `url` with an in-memory store and a few retries (enough for
/// rate limiting, few enough that a failing server ends the test quickly).
pub async fn new_client(url: &str) -> anyhow::Result<Client> {
    Client::builder()
        .homeserver_url(url)
        .request_config(RequestConfig::short_retry())
        .build()
        .await
        .with_context(|| format!("cannot build a client for {url}"))
}

/// Registers `localpart` with [`password`] through open registration.
///
/// The first request carries no `auth`; the server answers 401 with the flows and a session,
/// and the second request completes the `m.login.dummy` stage in that session.
pub async fn register(url: &str, localpart: &str) -> anyhow::Result<()> {
    let client = new_client(url).await?;
    let mut request = register::v3::Request::new();
    request.username = Some(localpart.to_owned());
    request.password = Some(password(localpart));
    request.initial_device_display_name = Some("hearth sdk test (registration)".to_owned());
    let auth = client.matrix_auth();
    let error = match auth.register(request.clone()).await {
        // A server may skip interactive authentication for open registration.
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let info = error.as_uiaa_response().cloned().with_context(|| {
        format!("POST /_matrix/client/v3/register without auth: expected a 401 UIA reply: {error}")
    })?;
    let offers_dummy = info.flows.iter().any(|flow| flow.stages == [AuthType::Dummy]);
    ensure!(offers_dummy, "registration offers no m.login.dummy flow: {:?}", info.flows);
    let mut dummy = Dummy::new();
    dummy.session = info.session;
    request.auth = Some(AuthData::Dummy(dummy));
    auth.register(request).await.context("POST /_matrix/client/v3/register with m.login.dummy")?;
    Ok(())
}

/// Logs `localpart` in with a password on a fresh client.
pub async fn login(url: &str, localpart: &str) -> anyhow::Result<Client> {
    let client = new_client(url).await?;
    client
        .matrix_auth()
        .login_username(localpart, &password(localpart))
        .initial_device_display_name("hearth sdk test")
        .send()
        .await
        .with_context(|| format!("POST /_matrix/client/v3/login as {localpart}"))?;
    Ok(client)
}

/// Sync settings with an inline filter (no filter upload) and a short long-poll.
pub fn sync_settings() -> SyncSettings {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(SYNC_TIMELINE_LIMIT));
    SyncSettings::default().filter(Filter::FilterDefinition(filter)).timeout(SYNC_POLL)
}

/// One `/sync` request continuing from the client's last batch token.
pub async fn sync_once(client: &Client) -> anyhow::Result<SyncResponse> {
    client.sync_once(sync_settings()).await.context("GET /_matrix/client/v3/sync")
}

/// Syncs until `done` accepts a response, or fails after `deadline`.
///
/// `done` sees every response in turn, so it can collect what it needs across several.
pub async fn sync_until(
    client: &Client,
    deadline: Duration,
    what: &str,
    mut done: impl FnMut(&SyncResponse) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let response = sync_once(client).await?;
        if done(&response) {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("no sync showed {what} within {deadline:?}");
        }
    }
}

/// Syncs until `done` finds what it waits for in the client's store (what the SDK made of the
/// syncs so far), or fails after `deadline`.
pub async fn sync_until_stored(
    client: &Client,
    deadline: Duration,
    what: &str,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        sync_once(client).await?;
        if done().await? {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("no sync brought {what} within {deadline:?}");
        }
    }
}

/// The text bodies of the `m.room.message` events that `response` brings for `room_id`, oldest
/// first.
pub fn synced_bodies(response: &SyncResponse, room_id: &RoomId) -> Vec<String> {
    response.rooms.joined.get(room_id).map_or_else(Vec::new, |room| {
        room.timeline.events.iter().filter_map(message_body).collect()
    })
}

/// The body of an `m.room.message` event; `None` for any other event.
pub fn message_body(event: &TimelineEvent) -> Option<String> {
    match event.raw().deserialize().ok()? {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncMessageLikeEvent::Original(message),
        )) => Some(message.content.body().to_owned()),
        _ => None,
    }
}

/// The users whose `m.room.member` events in `response`'s timeline for `room_id` make them
/// joined.
pub fn synced_joins(response: &SyncResponse, room_id: &RoomId) -> Vec<OwnedUserId> {
    let Some(room) = response.rooms.joined.get(room_id) else { return Vec::new() };
    room.timeline
        .events
        .iter()
        .filter_map(|event| match event.raw().deserialize().ok()? {
            AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(
                SyncStateEvent::Original(member),
            )) if member.content.membership == MembershipState::Join => Some(member.state_key),
            _ => None,
        })
        .collect()
}

/// Creates a private room (`private_chat` preset, not published) named `name`.
pub async fn create_private_room(client: &Client, name: &str) -> anyhow::Result<Room> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.visibility = Visibility::Private;
    client.create_room(request).await.context("POST /_matrix/client/v3/createRoom")
}

/// The client's copy of the room.
pub fn room_of(client: &Client, room_id: &RoomId) -> anyhow::Result<Room> {
    client
        .get_room(room_id)
        .with_context(|| format!("{:?} does not know {room_id}", client.user_id()))
}

/// The logged-in user of `client`.
pub fn own_user_id(client: &Client) -> anyhow::Result<OwnedUserId> {
    client.user_id().map(ToOwned::to_owned).context("the client is not logged in")
}

/// `owner` creates a private room named `name` and invites `guest`; the guest sees the invite in
/// an incremental sync and joins; the owner sees the join through sync. Each step must show up
/// within `deadline`.
pub async fn invite_and_join(
    owner: &Client,
    guest: &Client,
    name: &str,
    deadline: Duration,
) -> anyhow::Result<OwnedRoomId> {
    // Initial syncs, so that what follows arrives in incremental ones.
    sync_once(owner).await?;
    sync_once(guest).await?;

    let room = create_private_room(owner, name).await?;
    let room_id = room.room_id().to_owned();
    let guest_id = own_user_id(guest)?;
    room.invite_user_by_id(&guest_id)
        .await
        .with_context(|| format!("POST /_matrix/client/v3/rooms/{room_id}/invite"))?;

    sync_until(guest, deadline, "the invite", |r| r.rooms.invited.contains_key(&room_id)).await?;
    let invited = room_of(guest, &room_id)?;
    ensure!(invited.state() == RoomState::Invited, "the guest's room state: {:?}", invited.state());
    invited.join().await.with_context(|| format!("POST /_matrix/client/v3/join/{room_id}"))?;
    ensure!(invited.state() == RoomState::Joined, "the guest's room state: {:?}", invited.state());

    sync_until(owner, deadline, "the guest's join", |r| {
        synced_joins(r, &room_id).contains(&guest_id)
    })
    .await?;
    Ok(room_id)
}

/// Sends a plain-text message and returns its event ID.
pub async fn send_text(room: &Room, body: &str) -> anyhow::Result<OwnedEventId> {
    let result = room.send(RoomMessageEventContent::text_plain(body)).await.with_context(|| {
        format!("PUT /_matrix/client/v3/rooms/{}/send/m.room.message", room.room_id())
    })?;
    Ok(result.response.event_id)
}

/// Pages backwards through the whole room history with `/messages` (from the end of the
/// timeline, [`PAGE_SIZE`] events a page) and returns the message bodies, newest first.
pub async fn message_bodies_backward(room: &Room) -> anyhow::Result<Vec<String>> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = UInt::from(PAGE_SIZE);
        let page = room.messages(options).await.with_context(|| {
            format!("GET /_matrix/client/v3/rooms/{}/messages?dir=b&from={from:?}", room.room_id())
        })?;
        bodies.extend(page.chunk.iter().filter_map(message_body));
        match page.end {
            Some(end) if !page.chunk.is_empty() => {
                ensure!(
                    from.as_deref() != Some(end.as_str()),
                    "/messages returned `end` == `from`"
                );
                from = Some(end);
            }
            _ => return Ok(bodies),
        }
    }
    bail!("/messages did not reach the start of the room within {MAX_PAGES} pages")
}
