//! Room creation and membership: `createRoom`, join, invite, leave, forget, kick, ban, unban,
//! `joined_rooms`.

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomVersionId, UserId,
    api::client::{
        membership::{
            ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_rooms, kick_user, leave_room, unban_user,
        },
        room::{Visibility, create_room},
    },
    serde::Raw,
};
use serde_json::{Map, Value as JsonValue};

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::{
        MembershipChange,
        create::{CREATABLE_VERSIONS, CreateRoomSpec, DEFAULT_VERSION, Preset},
    },
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(create_room)
        .add(join_room_by_id)
        .add(join_room_by_id_or_alias)
        .add(invite_user)
        .add(leave_room)
        .add(forget_room)
        .add(kick_user)
        .add(ban_user)
        .add(unban_user)
        .add(joined_rooms);
}

async fn create_room(
    services: Arc<Services>,
    user: User,
    request: create_room::v3::Request,
) -> Result<create_room::v3::Response> {
    user.require_not_suspended()?;
    let spec = create_room_spec(&services, &user, request)?;
    for invitee in &spec.invite {
        check_invitee(&services, invitee).await?;
    }
    let room_id = services.rooms.create_room(spec).await?;
    Ok(create_room::v3::Response::new(room_id))
}

fn create_room_spec(
    services: &Services,
    user: &User,
    request: create_room::v3::Request,
) -> Result<CreateRoomSpec> {
    use create_room::v3::RoomPreset;
    let version = match request.room_version {
        Some(version) if CREATABLE_VERSIONS.contains(&version.as_str()) => version,
        Some(version) => {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} cannot be created here; use 10, 11 or 12"),
            ));
        }
        None => RoomVersionId::try_from(DEFAULT_VERSION).map_err(|e| anyhow::anyhow!(e))?,
    };
    if !matches!(request.visibility, Visibility::Public | Visibility::Private) {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::BadJson,
            format!("Unknown visibility {:?}: use public or private", request.visibility.as_str()),
        ));
    }
    let preset = match (request.preset, &request.visibility) {
        (Some(RoomPreset::PublicChat), _) => Preset::PublicChat,
        (Some(RoomPreset::TrustedPrivateChat), _) => Preset::TrustedPrivateChat,
        (Some(RoomPreset::PrivateChat), _) => Preset::PrivateChat,
        (Some(other), _) => {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadJson,
                format!(
                    "Unknown preset {:?}: use private_chat, trusted_private_chat or public_chat",
                    other.as_str()
                ),
            ));
        }
        (None, Visibility::Public) => Preset::PublicChat,
        (None, _) => Preset::PrivateChat,
    };
    let alias =
        request.room_alias_name.as_deref().map(|name| local_alias(services, name)).transpose()?;
    if let Some(alias) = &alias {
        let acting = user.appservice.as_ref().map(|service| service.id());
        services.appservices.require_alias_not_claimed(alias, acting)?;
    }
    let mut creation_content = raw_object(request.creation_content.as_ref())?.unwrap_or_default();
    creation_content.remove("room_version");
    Ok(CreateRoomSpec {
        creator: user.user_id.clone(),
        version,
        preset,
        creation_content,
        initial_state: request
            .initial_state
            .iter()
            .map(initial_state_event)
            .collect::<Result<_>>()?,
        name: request.name,
        topic: request.topic,
        alias,
        invite: request.invite,
        is_direct: request.is_direct,
        power_level_override: raw_object(request.power_level_content_override.as_ref())?,
        publish: request.visibility == Visibility::Public,
    })
}

/// `#name:server` for a local alias name, checked against the alias grammar.
fn local_alias(services: &Services, name: &str) -> Result<OwnedRoomAliasId> {
    if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::InvalidParam,
            "Invalid room alias name",
        ));
    }
    OwnedRoomAliasId::try_from(format!("#{name}:{}", services.server_name()))
        .map_err(|_| Error::invalid_param("Invalid room alias name"))
}

fn raw_object<T>(raw: Option<&Raw<T>>) -> Result<Option<Map<String, JsonValue>>> {
    raw.map(|raw| {
        serde_json::from_str::<Map<String, JsonValue>>(raw.json().get())
            .map_err(|_| Error::bad_json("Expected a JSON object"))
    })
    .transpose()
}

fn initial_state_event<T>(raw: &Raw<T>) -> Result<(String, String, JsonValue)> {
    #[derive(serde::Deserialize)]
    struct InitialState {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        state_key: String,
        content: JsonValue,
    }
    let event: InitialState = serde_json::from_str(raw.json().get())
        .map_err(|e| Error::bad_json(format!("Invalid initial_state event: {e}")))?;
    if !event.content.is_object() {
        return Err(Error::bad_json("initial_state content must be an object"));
    }
    Ok((event.kind, event.state_key, event.content))
}

async fn join(
    services: &Services,
    user: &User,
    room_id: OwnedRoomId,
    reason: Option<String>,
) -> Result<OwnedRoomId> {
    user.require_not_suspended()?;
    if !services.rooms.exists(&room_id).await? {
        // FIXME: joining a room of another server needs the federation make_join/send_join dance.
        return Err(Error::not_found(
            "This room is unknown to this server; joining over federation is not supported yet",
        ));
    }
    let change = MembershipChange {
        room_id: room_id.clone(),
        sender: user.user_id.clone(),
        target: user.user_id.clone(),
        membership: "join",
        reason,
        is_direct: false,
    };
    services.rooms.change_membership(change).await?;
    Ok(room_id)
}

async fn join_room_by_id(
    services: Arc<Services>,
    user: User,
    request: join_room_by_id::v3::Request,
) -> Result<join_room_by_id::v3::Response> {
    let room_id = join(&services, &user, request.room_id, request.reason).await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

async fn join_room_by_id_or_alias(
    services: Arc<Services>,
    user: User,
    request: join_room_by_id_or_alias::v3::Request,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let room_id = match OwnedRoomId::try_from(request.room_id_or_alias.clone()) {
        Ok(room_id) => room_id,
        Err(alias) => services.resolve_alias(&alias).await?,
    };
    let room_id = join(&services, &user, room_id, request.reason).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// Changes another user's (or one's own) membership.
async fn change(
    services: &Services,
    user: &User,
    room_id: OwnedRoomId,
    target: ruma::OwnedUserId,
    membership: &'static str,
    reason: Option<String>,
) -> Result<()> {
    if !services.rooms.exists(&room_id).await? {
        // As for any room the sender is not in: 403, not a hint that the room does not exist.
        return Err(Error::forbidden("Unknown room"));
    }
    let change = MembershipChange {
        room_id,
        sender: user.user_id.clone(),
        target,
        membership,
        reason,
        is_direct: false,
    };
    services.rooms.change_membership(change).await?;
    Ok(())
}

async fn invite_user(
    services: Arc<Services>,
    user: User,
    request: invite_user::v3::Request,
) -> Result<invite_user::v3::Response> {
    user.require_not_suspended()?;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = request.recipient else {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Third-party invites are not supported",
        ));
    };
    check_invitee(&services, &recipient.user_id).await?;
    let state = services.store.membership(&request.room_id, &recipient.user_id, None).await?;
    if state.is_some_and(|m| m.membership == "join") {
        return Err(Error::forbidden("The user is already in the room"));
    }
    change(&services, &user, request.room_id, recipient.user_id, "invite", recipient.reason)
        .await?;
    Ok(invite_user::v3::Response::new())
}

/// An invitee, from `/invite` or `createRoom`'s `invite` list, must be an active local user.
async fn check_invitee(services: &Services, invitee: &UserId) -> Result<()> {
    if invitee.server_name() != services.server_name() {
        // FIXME: inviting users of other servers needs the federation invite API.
        return Err(Error::forbidden("Inviting users of other servers is not supported yet"));
    }
    if services.users.get(invitee).await?.is_none_or(|u| u.deactivated) {
        return Err(Error::not_found(format!("No such user on this server: {invitee}")));
    }
    Ok(())
}

async fn leave_room(
    services: Arc<Services>,
    user: User,
    request: leave_room::v3::Request,
) -> Result<leave_room::v3::Response> {
    let membership = services.store.membership(&request.room_id, &user.user_id, None).await?;
    match membership.as_ref().map(|m| m.membership.as_str()) {
        Some("join" | "invite" | "knock") => {
            change(
                &services,
                &user,
                request.room_id,
                user.user_id.clone(),
                "leave",
                request.reason,
            )
            .await?;
        }
        Some("leave" | "ban") => {}
        _ => return Err(Error::forbidden("You are not in this room")),
    }
    Ok(leave_room::v3::Response::new())
}

async fn forget_room(
    services: Arc<Services>,
    user: User,
    request: forget_room::v3::Request,
) -> Result<forget_room::v3::Response> {
    let membership = services.store.membership(&request.room_id, &user.user_id, None).await?;
    match membership.as_ref().map(|m| m.membership.as_str()) {
        Some("leave" | "ban") => {
            services.store.forget_room(&user.user_id, &request.room_id).await?
        }
        Some(_) => return Err(Error::bad_request("Leave the room before forgetting it")),
        None => return Err(Error::not_found("You were never in this room")),
    }
    Ok(forget_room::v3::Response::new())
}

async fn kick_user(
    services: Arc<Services>,
    user: User,
    request: kick_user::v3::Request,
) -> Result<kick_user::v3::Response> {
    user.require_not_suspended()?;
    let membership = services.store.membership(&request.room_id, &request.user_id, None).await?;
    if !membership.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock")) {
        return Err(Error::forbidden("The user is not in the room"));
    }
    change(&services, &user, request.room_id, request.user_id, "leave", request.reason).await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban_user(
    services: Arc<Services>,
    user: User,
    request: ban_user::v3::Request,
) -> Result<ban_user::v3::Response> {
    user.require_not_suspended()?;
    change(&services, &user, request.room_id, request.user_id, "ban", request.reason).await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban_user(
    services: Arc<Services>,
    user: User,
    request: unban_user::v3::Request,
) -> Result<unban_user::v3::Response> {
    user.require_not_suspended()?;
    let membership = services.store.membership(&request.room_id, &request.user_id, None).await?;
    if membership.is_none_or(|m| m.membership != "ban") {
        return Err(Error::forbidden("The user is not banned"));
    }
    change(&services, &user, request.room_id, request.user_id, "leave", request.reason).await?;
    Ok(unban_user::v3::Response::new())
}

async fn joined_rooms(
    services: Arc<Services>,
    user: User,
    _: joined_rooms::v3::Request,
) -> Result<joined_rooms::v3::Response> {
    let rooms = services.store.memberships_of(&user.user_id).await?;
    let joined = rooms.into_iter().filter(|m| m.membership == "join").map(|m| m.room_id).collect();
    Ok(joined_rooms::v3::Response::new(joined))
}
