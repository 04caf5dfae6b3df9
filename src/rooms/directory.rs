//! Room aliases and the public room directory of this server.
//!
//! An alias belongs to this server when its server part is this server's name. Aliases of other
//! servers are resolved over federation (not yet served), so for now they are unknown here.

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UInt, UserId,
    directory::{PublicRoomsChunk, RoomNetwork},
    events::StateEventType,
    room::{JoinRuleKind, RoomType},
};
use serde::Deserialize;

use super::{Rooms, power::content_of};
use crate::{
    Error, Result,
    store::{AppserviceListing, EventRecord},
};

/// One page of the public room directory.
#[derive(Debug)]
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoomsChunk>,
    /// Offset of the next page, if there is one.
    pub next: Option<usize>,
    /// Offset of the previous page, if this is not the first.
    pub prev: Option<usize>,
    pub total: usize,
}

impl Rooms {
    fn require_local_alias(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param(format!(
                "{alias} is not an alias of this server ({})",
                self.server_name()
            )));
        }
        Ok(())
    }

    /// Points a new local alias at a room, which the user must be joined to if `require_joined`.
    pub async fn create_alias(
        &self,
        user_id: &UserId,
        alias: &RoomAliasId,
        room_id: &RoomId,
        require_joined: bool,
    ) -> Result<()> {
        self.require_local_alias(alias)?;
        if !self.exists(room_id).await? {
            return Err(Error::not_found("Unknown room"));
        }
        if require_joined {
            self.require_joined(room_id, user_id).await?;
        }
        if !self.store().create_alias(alias, room_id, user_id).await? {
            return Err(Error::client(
                http::StatusCode::CONFLICT,
                ruma::api::error::ErrorKind::Unknown,
                format!("The alias {alias} is already in use"),
            ));
        }
        Ok(())
    }

    /// The room a local alias points to.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        let unknown = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.server_name() {
            return Err(unknown());
        }
        Ok(self.store().alias(alias).await?.ok_or_else(unknown)?.room_id)
    }

    /// Removes a local alias: its creator may, and so may whoever may change the room's
    /// canonical alias, and server admins.
    pub async fn delete_alias(
        &self,
        user_id: &UserId,
        is_admin: bool,
        alias: &RoomAliasId,
    ) -> Result<()> {
        self.require_local_alias(alias)?;
        let record = self
            .store()
            .alias(alias)
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"))?;
        let allowed = is_admin
            || record.creator == user_id
            || self
                .may_send_state(&record.room_id, user_id, StateEventType::RoomCanonicalAlias)
                .await?;
        if !allowed {
            return Err(Error::forbidden("You may not remove this alias"));
        }
        self.store().delete_alias(alias).await?;
        Ok(())
    }

    /// The local aliases of a room whose state the user may read.
    pub async fn room_aliases(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<OwnedRoomAliasId>> {
        self.require_readable(room_id, user_id).await?;
        Ok(self.store().room_aliases(room_id).await?)
    }

    /// Whether a joined user's power level allows a state event of this type.
    async fn may_send_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_type: StateEventType,
    ) -> Result<bool> {
        let joined = self
            .store()
            .membership(room_id, user_id, None)
            .await?
            .is_some_and(|m| m.membership == "join");
        Ok(joined && self.power_levels(room_id).await?.user_can_send_state(user_id, event_type))
    }

    /// Checks an `m.room.canonical_alias` content: every alias in it is valid and, if it is
    /// one of this server's, exists and points to this room (`M_BAD_ALIAS` otherwise).
    pub async fn check_canonical_alias(
        &self,
        room_id: &RoomId,
        content: &serde_json::Value,
    ) -> Result<()> {
        let bad_alias = |message: String| {
            Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                message,
            )
        };
        let alias = content.get("alias").filter(|alias| !alias.is_null());
        let alt_aliases = match content.get("alt_aliases") {
            None => &Vec::new(),
            Some(serde_json::Value::Array(aliases)) => aliases,
            Some(_) => return Err(Error::bad_json("alt_aliases must be a list of room aliases")),
        };
        for value in alias.into_iter().chain(alt_aliases) {
            let alias = value
                .as_str()
                .and_then(|alias| <&RoomAliasId>::try_from(alias).ok())
                .ok_or_else(|| Error::invalid_param(format!("{value} is not a room alias")))?;
            if alias.server_name() != self.server_name() {
                continue; // another server's alias; it would be checked over federation
            }
            match self.store().alias(alias).await? {
                Some(record) if record.room_id == room_id => {}
                Some(_) => return Err(bad_alias(format!("{alias} points to another room"))),
                None => return Err(bad_alias(format!("{alias} does not exist"))),
            }
        }
        Ok(())
    }

    /// Whether the room is listed in the public directory.
    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        if !self.exists(room_id).await? {
            return Err(Error::not_found("Unknown room"));
        }
        Ok(self.store().is_published(room_id).await?)
    }

    /// Lists or unlists a room; the user needs the power to change its canonical alias.
    pub async fn set_published(
        &self,
        user_id: &UserId,
        is_admin: bool,
        room_id: &RoomId,
        published: bool,
    ) -> Result<()> {
        if !self.exists(room_id).await? {
            return Err(Error::not_found("Unknown room"));
        }
        if !is_admin
            && !self.may_send_state(room_id, user_id, StateEventType::RoomCanonicalAlias).await?
        {
            return Err(Error::forbidden("You may not change this room's directory listing"));
        }
        self.store().set_published(room_id, published).await?;
        Ok(())
    }

    /// Lists or unlists a room in an application service's directory of a third-party network
    /// (the service's token is the authorization, as the spec's
    /// `PUT /directory/list/appservice/{networkId}/{roomId}` has it).
    pub async fn set_appservice_published(
        &self,
        appservice_id: &str,
        network_id: &str,
        room_id: &RoomId,
        published: bool,
    ) -> Result<()> {
        if network_id.is_empty()
            || network_id.len() > 255
            || network_id.chars().any(char::is_control)
        {
            return Err(Error::invalid_param("The network ID must be 1 to 255 printable bytes"));
        }
        if !self.exists(room_id).await? {
            return Err(Error::not_found("Unknown room"));
        }
        let listing = AppserviceListing {
            appservice_id: appservice_id.to_owned(),
            network_id: network_id.to_owned(),
            room_id: room_id.to_owned(),
        };
        self.store().set_appservice_published(listing, published).await?;
        Ok(())
    }

    /// A page of the public rooms of a network matching a search term, largest rooms first:
    /// this server's directory (`Matrix`), the rooms application services published for one
    /// third-party network (its network ID as the instance ID), or both (`All`).
    pub async fn public_rooms(
        &self,
        network: &RoomNetwork,
        search: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<PublicRoomsPage> {
        let needle = search.map(str::to_lowercase).filter(|term| !term.trim().is_empty());
        let mut chunks = Vec::new();
        for room_id in self.network_rooms(network).await? {
            let chunk = self.public_rooms_chunk(room_id).await?;
            if needle.as_deref().is_none_or(|needle| matches_search(&chunk, needle)) {
                chunks.push(chunk);
            }
        }
        chunks.sort_by(|a, b| {
            b.num_joined_members.cmp(&a.num_joined_members).then(a.room_id.cmp(&b.room_id))
        });
        let total = chunks.len();
        let page: Vec<_> = chunks.into_iter().skip(offset).take(limit).collect();
        let end = offset.saturating_add(page.len());
        Ok(PublicRoomsPage {
            chunk: page,
            next: (end < total).then_some(end),
            prev: (offset > 0).then(|| offset.saturating_sub(limit)),
            total,
        })
    }

    async fn network_rooms(&self, network: &RoomNetwork) -> Result<Vec<OwnedRoomId>> {
        let store = self.store();
        let rooms = match network {
            RoomNetwork::ThirdParty(network_id) => {
                store.appservice_published_rooms(Some(network_id)).await?
            }
            RoomNetwork::All => {
                let mut rooms = store.published_rooms().await?;
                rooms.extend(store.appservice_published_rooms(None).await?);
                rooms.sort();
                rooms.dedup();
                rooms
            }
            _ => store.published_rooms().await?,
        };
        Ok(rooms)
    }

    async fn public_rooms_chunk(&self, room_id: OwnedRoomId) -> Result<PublicRoomsChunk> {
        let store = self.store();
        let state = |event_type: &'static str| store.current_state_event(&room_id, event_type, "");
        let name = content_field(state("m.room.name").await?, "name");
        let topic = content_field(state("m.room.topic").await?, "topic");
        let avatar = content_field(state("m.room.avatar").await?, "url");
        let alias = content_field(state("m.room.canonical_alias").await?, "alias");
        let join_rule = content_field(state("m.room.join_rules").await?, "join_rule");
        let history =
            content_field(state("m.room.history_visibility").await?, "history_visibility");
        let guest_access = content_field(state("m.room.guest_access").await?, "guest_access");
        let room_type = content_field(state("m.room.create").await?, "type");
        let members = store.members_with(&room_id, "join").await?.len();

        let mut chunk = PublicRoomsChunk::from(ruma::directory::PublicRoomsChunkInit {
            num_joined_members: UInt::try_from(members).unwrap_or(UInt::MAX),
            room_id,
            world_readable: history.as_deref() == Some("world_readable"),
            guest_can_join: guest_access.as_deref() == Some("can_join"),
        });
        chunk.name = name;
        chunk.topic = topic;
        chunk.avatar_url = avatar.map(Into::into);
        chunk.canonical_alias = alias.and_then(|alias| alias.try_into().ok());
        chunk.join_rule =
            join_rule.map_or(JoinRuleKind::Public, |rule| JoinRuleKind::from(rule.as_str()));
        chunk.room_type = room_type.map(|room_type| RoomType::from(room_type.as_str()));
        Ok(chunk)
    }
}

/// A string field of a state event's content.
fn content_field(event: Option<EventRecord>, field: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Content(serde_json::Map<String, serde_json::Value>);
    let content = content_of::<Content>(&event?.pdu)?;
    content.0.get(field)?.as_str().map(str::to_owned)
}

fn matches_search(chunk: &PublicRoomsChunk, needle: &str) -> bool {
    let contains =
        |text: Option<&str>| text.is_some_and(|text| text.to_lowercase().contains(needle));
    contains(chunk.name.as_deref())
        || contains(chunk.topic.as_deref())
        || contains(chunk.canonical_alias.as_ref().map(|alias| alias.as_str()))
}
