//! Sending and reading room events: send, state, members, `/event`, `/context`, `/messages`,
//! `/redact`.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction as RumaDirection,
        client::{
            context::get_context,
            membership::{get_member_events, joined_members},
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::{
        builder::ProtoEvent,
        format::{Format, Viewer, client_events},
        power::content_of,
        transaction_key,
    },
    services::Services,
    store::{Direction, EventRecord, RoomEventsQuery},
    sync::{EventFilter, parse_token, token},
    users::ignored::is_ignored,
};

pub fn routes(router: &mut Router) {
    router
        .add(send_message_event)
        .add(send_state_event)
        .add(get_state_event_for_key)
        .add(get_state_events)
        .add(get_member_events)
        .add(joined_members)
        .add(get_room_event)
        .add(get_context)
        .add(get_message_events)
        .add(redact_event);
}

fn raw<T>(value: &JsonValue) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value).map_err(|e| anyhow::anyhow!(e))?))
}

pub(super) fn raws<T>(values: &[JsonValue]) -> Result<Vec<Raw<T>>> {
    values.iter().map(raw).collect()
}

fn content_json<T>(body: &Raw<T>) -> Result<JsonValue> {
    let value: JsonValue =
        serde_json::from_str(body.json().get()).map_err(|_| Error::not_json("Invalid JSON"))?;
    if !value.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    Ok(value)
}

/// Refuses rooms this server does not know with 403, as the spec answers anyone who is not a
/// member (and as Synapse does), so that a non-member cannot probe which room IDs exist.
pub(super) async fn require_room(services: &Services, room_id: &ruma::RoomId) -> Result<()> {
    if !services.rooms.exists(room_id).await? {
        return Err(Error::forbidden("Unknown room"));
    }
    Ok(())
}

async fn send_message_event(
    services: Arc<Services>,
    user: User,
    request: send_message_event::v3::Request,
) -> Result<send_message_event::v3::Response> {
    user.require_not_suspended()?;
    require_room(&services, &request.room_id).await?;
    let event_type = request.event_type.to_string();
    if event_type.is_empty() || event_type.len() > 255 {
        return Err(Error::invalid_param("Invalid event type"));
    }
    let transaction = transaction_key(
        &user.user_id,
        user.device_id.as_str(),
        &["send", request.room_id.as_str(), &event_type],
        request.txn_id.as_str(),
    );
    let proto = ProtoEvent {
        room_id: request.room_id,
        sender: user.user_id.clone(),
        event_type,
        state_key: None,
        content: content_json(&request.body)?,
        redacts: None,
        transaction: Some(transaction),
    };
    let event_id = services.rooms.send(proto).await?;
    // Sending is activity: an idle user is online again.
    services.presence.active(&user.user_id).await;
    Ok(send_message_event::v3::Response::new(event_id))
}

async fn send_state_event(
    services: Arc<Services>,
    user: User,
    request: send_state_event::v3::Request,
) -> Result<send_state_event::v3::Response> {
    user.require_not_suspended()?;
    require_room(&services, &request.room_id).await?;
    let event_type = request.event_type.to_string();
    let content = content_json(&request.body)?;
    match event_type.as_str() {
        "m.room.member" => {
            require_own_profile_update(
                &services,
                &user,
                &request.room_id,
                &request.state_key,
                &content,
            )
            .await?
        }
        "m.room.canonical_alias" => {
            services.rooms.check_canonical_alias(&request.room_id, &content).await?
        }
        "m.room.power_levels" => require_power_levels_shape(&content)?,
        _ => {}
    }
    let proto = ProtoEvent {
        room_id: request.room_id,
        sender: user.user_id,
        event_type,
        state_key: Some(request.state_key),
        content,
        redacts: None,
        transaction: None,
    };
    let event_id = services.rooms.send(proto).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// Power levels whose content does not parse are the client's bad JSON (400, as Synapse answers),
/// not an action the sender lacks the power for, which is what the auth rules would report.
fn require_power_levels_shape(content: &JsonValue) -> Result<()> {
    use ruma::events::room::power_levels::RoomPowerLevelsEventContent;
    serde_json::from_value::<RoomPowerLevelsEventContent>(content.clone())
        .map(drop)
        .map_err(|error| Error::bad_json(format!("Invalid power levels: {error}")))
}

/// Membership changes have their own endpoints; through `/state`, a joined user may only
/// update their own member event (a per-room display name or avatar) and stay joined.
async fn require_own_profile_update(
    services: &Services,
    user: &User,
    room_id: &ruma::RoomId,
    state_key: &str,
    content: &JsonValue,
) -> Result<()> {
    let stays_joined = content.get("membership").and_then(JsonValue::as_str) == Some("join");
    if state_key != user.user_id.as_str() || !stays_joined {
        return Err(Error::forbidden("Use the membership endpoints to change membership"));
    }
    services.rooms.require_joined(room_id, &user.user_id).await
}

async fn get_state_event_for_key(
    services: Arc<Services>,
    user: User,
    request: get_state_event_for_key::v3::Request,
) -> Result<get_state_event_for_key::v3::Response> {
    use get_state_event_for_key::v3::StateEventFormat;
    require_room(&services, &request.room_id).await?;
    let event = state_for_reader(&services, &user, &request.room_id)
        .await?
        .into_iter()
        .find(|e| {
            e.event_type == request.event_type.to_string()
                && e.state_key.as_deref() == Some(&request.state_key)
        })
        .ok_or_else(|| Error::not_found("No such state"))?;
    let body = match request.format {
        StateEventFormat::Event => {
            let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
            client_events(&services.store, viewer, &[event], Format::Client).await?.remove(0)
        }
        _ => content_of::<JsonValue>(&event.pdu).unwrap_or_default(),
    };
    let json = serde_json::value::to_raw_value(&body).map_err(|e| anyhow::anyhow!(e))?;
    Ok(get_state_event_for_key::v3::Response::new(json))
}

/// The state a user may read: the current state while joined (or world-readable), the state at
/// their leave otherwise.
async fn state_for_reader(
    services: &Services,
    user: &User,
    room_id: &ruma::RoomId,
) -> Result<Vec<EventRecord>> {
    let view = services.rooms.history_view(room_id, &user.user_id).await?;
    if view.can_read_current() {
        return Ok(services.store.current_state(room_id).await?);
    }
    match view.end() {
        Some(end)
            if end > 0 && view.current_membership().is_some_and(|m| m == "leave" || m == "ban") =>
        {
            Ok(services.store.state_at(room_id, end).await?)
        }
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

async fn get_state_events(
    services: Arc<Services>,
    user: User,
    request: get_state_events::v3::Request,
) -> Result<get_state_events::v3::Response> {
    require_room(&services, &request.room_id).await?;
    let state = state_for_reader(&services, &user, &request.room_id).await?;
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let events = client_events(&services.store, viewer, &state, Format::Client).await?;
    Ok(get_state_events::v3::Response::new(raws(&events)?))
}

async fn get_member_events(
    services: Arc<Services>,
    user: User,
    request: get_member_events::v3::Request,
) -> Result<get_member_events::v3::Response> {
    require_room(&services, &request.room_id).await?;
    let mut state = match &request.at {
        Some(at) => {
            let view = services.rooms.history_view(&request.room_id, &user.user_id).await?;
            let at = parse_token(at)?;
            let limit = view.end().map_or(at, |end| end.min(at));
            if view.end().is_some()
                && !view.can_read_current()
                && view.current_membership().is_none()
            {
                return Err(Error::forbidden("You are not a member of this room"));
            }
            services.store.state_at(&request.room_id, limit).await?
        }
        None => state_for_reader(&services, &user, &request.room_id).await?,
    };
    let wanted = request.membership.as_ref().map(ToString::to_string);
    let unwanted = request.not_membership.as_ref().map(ToString::to_string);
    state.retain(|event| {
        if event.event_type != "m.room.member" {
            return false;
        }
        let membership = content_of::<JsonValue>(&event.pdu)
            .and_then(|c| c.get("membership").and_then(|m| m.as_str().map(ToOwned::to_owned)))
            .unwrap_or_default();
        wanted.as_ref().is_none_or(|w| *w == membership)
            && unwanted.as_ref().is_none_or(|u| *u != membership)
    });
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let events = client_events(&services.store, viewer, &state, Format::Client).await?;
    Ok(get_member_events::v3::Response::new(raws(&events)?))
}

async fn joined_members(
    services: Arc<Services>,
    user: User,
    request: joined_members::v3::Request,
) -> Result<joined_members::v3::Response> {
    use joined_members::v3::RoomMember;
    require_room(&services, &request.room_id).await?;
    services.rooms.require_readable(&request.room_id, &user.user_id).await?;
    let state = services.store.current_state(&request.room_id).await?;
    let mut joined = BTreeMap::new();
    for event in state.iter().filter(|e| e.event_type == "m.room.member") {
        let content: JsonValue = content_of(&event.pdu).unwrap_or_default();
        if content.get("membership").and_then(JsonValue::as_str) != Some("join") {
            continue;
        }
        let Some(user_id) =
            event.state_key.as_deref().and_then(|k| ruma::OwnedUserId::try_from(k).ok())
        else {
            continue;
        };
        let mut member = RoomMember::new();
        member.display_name =
            content.get("displayname").and_then(JsonValue::as_str).map(ToOwned::to_owned);
        member.avatar_url = content.get("avatar_url").and_then(JsonValue::as_str).map(Into::into);
        joined.insert(user_id, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}

async fn get_room_event(
    services: Arc<Services>,
    user: User,
    request: get_room_event::v3::Request,
) -> Result<get_room_event::v3::Response> {
    let event = services.rooms.visible_event(&user.user_id, &request.event_id).await?;
    if event.room_id != request.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let event = client_events(&services.store, viewer, &[event], Format::Client).await?.remove(0);
    Ok(get_room_event::v3::Response::new(raw(&event)?))
}

/// The page limit a client asked for, capped.
pub(super) fn page_limit(limit: UInt, default: usize) -> usize {
    let limit = usize::try_from(u64::from(limit)).unwrap_or(default);
    if limit == 0 { default } else { limit.min(crate::sync::MAX_LIMIT) }
}

/// Reads up to `query.limit` visible events, skipping those the user may not see and those of
/// users they ignore (state events excepted).
pub(super) async fn visible_page(
    services: &Services,
    user: &User,
    mut query: RoomEventsQuery,
) -> Result<(Vec<EventRecord>, Option<i64>)> {
    let view = services.rooms.history_view(&query.room_id, &user.user_id).await?;
    let ignored = services.users.ignored_users(&user.user_id).await?;
    let shown = |event: &EventRecord| {
        view.allows(event) && !is_ignored(&ignored, &event.sender, event.state_key.is_some())
    };
    let (from, limit) = (query.from, query.limit);
    let mut events = Vec::new();
    let mut cursor = from;
    loop {
        query.from = cursor;
        let batch = services.store.room_events(query.clone()).await?;
        let exhausted = batch.len() < limit;
        if let Some(last) = batch.last() {
            cursor = last.stream_position;
        }
        events.extend(batch.into_iter().filter(|e| shown(e)));
        if exhausted || events.len() >= limit {
            events.truncate(limit);
            let next = (!exhausted || events.len() == limit)
                .then(|| events.last().map_or(cursor, |e| e.stream_position));
            return Ok((events, next.filter(|_| !exhausted || cursor != from)));
        }
    }
}

async fn get_message_events(
    services: Arc<Services>,
    user: User,
    request: get_message_events::v3::Request,
) -> Result<get_message_events::v3::Response> {
    require_room(&services, &request.room_id).await?;
    let view = services.rooms.history_view(&request.room_id, &user.user_id).await?;
    if view.current_membership().is_none() && !view.can_read_current() {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let direction = match request.dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    };
    let current = services.store.current_position().await?;
    // A token T means "between positions T and T+1": backward pages read positions <= T.
    let from = match &request.from {
        Some(from) => parse_token(from)?,
        None if direction == Direction::Backward => current,
        None => 0,
    };
    let to = request.to.as_deref().map(parse_token).transpose()?;
    let (query_from, query_to) = match direction {
        Direction::Backward => (from + 1, to),
        Direction::Forward => (from, to.map(|t| t + 1)),
    };
    let filter = EventFilter::from_ruma(&request.filter);
    let limit = page_limit(request.limit, 10);
    let (events, more) = visible_page(
        &services,
        &user,
        filter.query(&request.room_id, query_from, query_to, direction, limit),
    )
    .await?;

    // The spec leaves `end` out when no further events are available.
    let end = match (direction, events.last()) {
        (_, None) => None,
        _ if more.is_none() => None,
        (Direction::Backward, Some(last)) => Some(token(last.stream_position - 1)),
        (Direction::Forward, Some(last)) => Some(token(last.stream_position)),
    };
    let state = if filter.lazy_load_members {
        lazy_members(&services, &request.room_id, &events).await?
    } else {
        Vec::new()
    };
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let chunk = client_events(&services.store, viewer, &events, Format::Client).await?;
    let state = client_events(&services.store, viewer, &state, Format::Client).await?;
    let mut response = get_message_events::v3::Response::new();
    // The spec has `start` repeat the `from` the client gave, whatever form it had.
    response.start = request.from.clone().unwrap_or_else(|| token(from));
    response.end = end;
    response.chunk = raws(&chunk)?;
    response.state = raws(&state)?;
    Ok(response)
}

/// The current membership events of the senders of `events` (lazy-loading members).
async fn lazy_members(
    services: &Services,
    room_id: &ruma::RoomId,
    events: &[EventRecord],
) -> Result<Vec<EventRecord>> {
    let senders: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.sender.as_str()).collect();
    let mut members = Vec::new();
    for sender in senders {
        if let Some(member) =
            services.store.current_state_event(room_id, "m.room.member", sender).await?
        {
            members.push(member);
        }
    }
    Ok(members)
}

async fn get_context(
    services: Arc<Services>,
    user: User,
    request: get_context::v3::Request,
) -> Result<get_context::v3::Response> {
    let event = services.rooms.visible_event(&user.user_id, &request.event_id).await?;
    if event.room_id != request.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let filter = EventFilter::from_ruma(&request.filter);
    let limit = page_limit(request.limit, 10);
    let before_count = limit / 2;
    let after_count = limit - before_count;
    let position = event.stream_position;
    let room_id: OwnedRoomId = request.room_id.clone();
    let (before, _) = visible_page(
        &services,
        &user,
        filter.query(&room_id, position, None, Direction::Backward, before_count.max(1)),
    )
    .await?;
    let before: Vec<_> = before.into_iter().take(before_count).collect();
    let (after, _) = visible_page(
        &services,
        &user,
        filter.query(&room_id, position, None, Direction::Forward, after_count.max(1)),
    )
    .await?;
    let after: Vec<_> = after.into_iter().take(after_count).collect();

    let start = before.last().map_or(position - 1, |e| e.stream_position - 1);
    let end = after.last().map_or(position, |e| e.stream_position);
    let state = services.store.state_at(&room_id, end).await?;
    let state: Vec<_> = state.into_iter().filter(|e| filter.matches(e)).collect();

    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let store = &services.store;
    let mut response = get_context::v3::Response::new();
    response.start = Some(token(start));
    response.end = Some(token(end));
    response.events_before = raws(&client_events(store, viewer, &before, Format::Client).await?)?;
    response.event =
        Some(raw(&client_events(store, viewer, &[event], Format::Client).await?.remove(0))?);
    response.events_after = raws(&client_events(store, viewer, &after, Format::Client).await?)?;
    response.state = raws(&client_events(store, viewer, &state, Format::Client).await?)?;
    Ok(response)
}

/// A suspended account may still redact its own events, as the spec's account suspension asks,
/// but not other users' (as a room moderator would).
async fn require_may_redact(services: &Services, user: &User, event_id: &EventId) -> Result<()> {
    if !user.suspended {
        return Ok(());
    }
    let event = services.store.event(event_id).await?;
    if event.is_some_and(|event| event.sender == user.user_id) {
        Ok(())
    } else {
        Err(Error::user_suspended())
    }
}

async fn redact_event(
    services: Arc<Services>,
    user: User,
    request: redact_event::v3::Request,
) -> Result<redact_event::v3::Response> {
    require_may_redact(&services, &user, &request.event_id).await?;
    require_room(&services, &request.room_id).await?;
    let target: OwnedEventId = request.event_id;
    let mut content = serde_json::json!({});
    if let Some(reason) = request.reason {
        content["reason"] = reason.into();
    }
    let transaction = transaction_key(
        &user.user_id,
        user.device_id.as_str(),
        &["redact", request.room_id.as_str(), target.as_str()],
        request.txn_id.as_str(),
    );
    let proto = ProtoEvent {
        room_id: request.room_id,
        sender: user.user_id.clone(),
        event_type: "m.room.redaction".into(),
        state_key: None,
        content,
        redacts: Some(target),
        transaction: Some(transaction),
    };
    let event_id = services.rooms.send(proto).await?;
    Ok(redact_event::v3::Response::new(event_id))
}
