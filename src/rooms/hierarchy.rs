//! Spaces and room previews: the space hierarchy (`GET /rooms/{roomId}/hierarchy`) and the summary
//! of one room (`GET /room_summary/{roomIdOrAlias}`, MSC3266).
//!
//! Both show a room only to a user who may see it (client-server API, "Spaces"): a member
//! (joined or invited), or anyone when its join rule is `public`, `knock` or `knock_restricted`
//! or its history is `world_readable`, or, for a `restricted` room, a member of a room its join
//! rule allows. The hierarchy walks `m.space.child` links depth first from the requested room,
//! children ordered by their `order`, then by the link's timestamp, then by room ID; a link
//! without `via` is no link. Only rooms of this server are walked: FIXME: children on other
//! servers need the federation hierarchy API and are left out until it exists.

use std::collections::BTreeSet;

use ruma::{
    OwnedRoomId, RoomId, UInt, UserId,
    api::client::space::SpaceHierarchyRoomsChunk,
    events::room::join_rules::RoomJoinRulesEventContent,
    room::{AllowRule, JoinRule, JoinRuleSummary, RoomMembership, RoomSummary, RoomType},
    serde::Raw,
};
use serde_json::Value as JsonValue;

use super::{Rooms, power::content_of};
use crate::{Error, Result, store::EventRecord};

/// The most rooms a hierarchy page holds, and the page size when the client names none.
pub const MAX_HIERARCHY_LIMIT: usize = 50;

/// The most rooms one walk visits: a bound on the work a request costs.
const MAX_WALK: usize = 1_000;

/// The longest `order` of an `m.space.child` that counts (longer ones are ignored).
const MAX_ORDER_LENGTH: usize = 50;

/// What a hierarchy request asks for, already parsed.
#[derive(Clone, Debug)]
pub struct HierarchyQuery {
    pub room_id: OwnedRoomId,
    pub suggested_only: bool,
    pub max_depth: Option<usize>,
    pub limit: usize,
    /// The `next_batch` token of the page before.
    pub from: Option<String>,
}

/// One page of a space hierarchy.
#[derive(Debug)]
pub struct HierarchyPage {
    pub rooms: Vec<SpaceHierarchyRoomsChunk>,
    pub next_batch: Option<String>,
}

/// A room of the walk, and how far it is from the requested one.
struct Visit {
    room_id: OwnedRoomId,
    depth: usize,
}

/// A child link, with what orders it among its siblings.
struct ChildLink {
    order: Option<String>,
    origin_server_ts: i64,
    room_id: OwnedRoomId,
    suggested: bool,
    event: EventRecord,
}

impl Rooms {
    /// A page of the hierarchy under a room the user may see.
    pub async fn space_hierarchy(
        &self,
        user_id: &UserId,
        query: HierarchyQuery,
    ) -> Result<HierarchyPage> {
        let skip = parse_from(&query)?;
        if !self.may_preview(&query.room_id, Some(user_id)).await? {
            return Err(Error::forbidden("You may not see this room"));
        }
        let mut stack = vec![Visit { room_id: query.room_id.clone(), depth: 0 }];
        let mut seen = BTreeSet::new();
        let (mut rooms, mut position, mut more) = (Vec::new(), 0usize, false);
        while let Some(visit) = stack.pop() {
            if seen.len() >= MAX_WALK || !seen.insert(visit.room_id.clone()) {
                continue;
            }
            if visit.depth > 0 && !self.may_preview(&visit.room_id, Some(user_id)).await? {
                continue;
            }
            let links = self.child_links(&visit.room_id, query.suggested_only).await?;
            if query.max_depth.is_none_or(|max| visit.depth < max) {
                let depth = visit.depth + 1;
                stack.extend(
                    links.iter().rev().map(|l| Visit { room_id: l.room_id.clone(), depth }),
                );
            }
            position += 1;
            if position <= skip {
                continue;
            }
            if rooms.len() == query.limit {
                more = true;
                break;
            }
            rooms.push(self.hierarchy_chunk(&visit.room_id, &links).await?);
        }
        let next_batch = more.then(|| next_token(&query, skip + rooms.len()));
        Ok(HierarchyPage { rooms, next_batch })
    }

    /// The summary of a room (MSC3266) for a user, or for anyone when `user_id` is `None`;
    /// `M_NOT_FOUND` for a room that is unknown or that they may not see.
    pub async fn room_summary(
        &self,
        room_id: &RoomId,
        user_id: Option<&UserId>,
    ) -> Result<(RoomSummary, Option<String>)> {
        if !self.may_preview(room_id, user_id).await? {
            return Err(Error::not_found("Room not found"));
        }
        let membership = match user_id {
            Some(user_id) => self.store().membership(room_id, user_id, None).await?,
            None => None,
        };
        Ok((self.summary_of(room_id).await?, membership.map(|m| m.membership)))
    }

    /// Whether a user (or anyone, for `None`) may see a room's summary. An unknown room may not.
    async fn may_preview(&self, room_id: &RoomId, user_id: Option<&UserId>) -> Result<bool> {
        let store = self.store();
        if store.room_version(room_id).await?.is_none() {
            return Ok(false);
        }
        if let Some(user_id) = user_id {
            let membership = store.membership(room_id, user_id, None).await?;
            if membership.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite")) {
                return Ok(true);
            }
        }
        let history = self.state_field(room_id, "m.room.history_visibility", "history_visibility");
        if history.await?.as_deref() == Some("world_readable") {
            return Ok(true);
        }
        Ok(match self.join_rule(room_id).await? {
            JoinRule::Public | JoinRule::Knock | JoinRule::KnockRestricted(_) => true,
            JoinRule::Restricted(restricted) => match user_id {
                Some(user_id) => self.joined_any(user_id, &restricted.allow).await?,
                None => false,
            },
            _ => false,
        })
    }

    /// Whether the user is joined to a room one of the allow rules names.
    async fn joined_any(&self, user_id: &UserId, allow: &[AllowRule]) -> Result<bool> {
        for rule in allow {
            let AllowRule::RoomMembership(RoomMembership { room_id, .. }) = rule else { continue };
            let membership = self.store().membership(room_id, user_id, None).await?;
            if membership.is_some_and(|m| m.membership == "join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The room's join rule; `invite` when it has none, as the auth rules take it.
    async fn join_rule(&self, room_id: &RoomId) -> Result<JoinRule> {
        let event = self.store().current_state_event(room_id, "m.room.join_rules", "").await?;
        let content = event.and_then(|e| content_of::<RoomJoinRulesEventContent>(&e.pdu));
        Ok(content.map_or(JoinRule::Invite, |content| content.join_rule))
    }

    /// A string field of one of the room's current state events (empty state key).
    async fn state_field(
        &self,
        room_id: &RoomId,
        event_type: &str,
        field: &str,
    ) -> Result<Option<String>> {
        let event = self.store().current_state_event(room_id, event_type, "").await?;
        let content = event.and_then(|e| content_of::<JsonValue>(&e.pdu));
        Ok(content.and_then(|c| c.get(field)?.as_str().map(str::to_owned)))
    }

    /// The room's summary as the hierarchy and `room_summary` show it.
    async fn summary_of(&self, room_id: &RoomId) -> Result<RoomSummary> {
        let field = |event_type, field| self.state_field(room_id, event_type, field);
        let joined = self.store().members_with(room_id, "join").await?.len();
        let history = field("m.room.history_visibility", "history_visibility").await?;
        let guest_access = field("m.room.guest_access", "guest_access").await?;
        let mut summary = RoomSummary::new(
            room_id.to_owned(),
            JoinRuleSummary::from(self.join_rule(room_id).await?),
            guest_access.as_deref() == Some("can_join"),
            UInt::try_from(joined).unwrap_or(UInt::MAX),
            history.as_deref() == Some("world_readable"),
        );
        summary.name = field("m.room.name", "name").await?.filter(|name| !name.is_empty());
        summary.topic = field("m.room.topic", "topic").await?.filter(|topic| !topic.is_empty());
        let avatar = field("m.room.avatar", "url").await?;
        summary.avatar_url = avatar.filter(|url| !url.is_empty()).map(Into::into);
        let alias = field("m.room.canonical_alias", "alias").await?;
        summary.canonical_alias = alias.and_then(|alias| alias.try_into().ok());
        summary.room_type =
            field("m.room.create", "type").await?.map(|t| RoomType::from(t.as_str()));
        let encryption = field("m.room.encryption", "algorithm").await?;
        summary.encryption = encryption.map(|algorithm| algorithm.as_str().into());
        summary.room_version = self.store().room_version(room_id).await?;
        Ok(summary)
    }

    /// The room's valid child links in sibling order (none unless the room is a space).
    async fn child_links(&self, room_id: &RoomId, suggested_only: bool) -> Result<Vec<ChildLink>> {
        let room_type = self.state_field(room_id, "m.room.create", "type").await?;
        if room_type.as_deref() != Some("m.space") {
            return Ok(Vec::new());
        }
        let state = self.store().current_state(room_id).await?;
        let mut links: Vec<ChildLink> = state
            .into_iter()
            .filter(|event| event.event_type == "m.space.child")
            .filter_map(child_link)
            .filter(|link| !suggested_only || link.suggested)
            .collect();
        links.sort_by(|a, b| {
            let order = |l: &ChildLink| (l.order.is_none(), l.order.clone());
            order(a)
                .cmp(&order(b))
                .then(a.origin_server_ts.cmp(&b.origin_server_ts))
                .then(a.room_id.cmp(&b.room_id))
        });
        Ok(links)
    }

    async fn hierarchy_chunk(
        &self,
        room_id: &RoomId,
        links: &[ChildLink],
    ) -> Result<SpaceHierarchyRoomsChunk> {
        let summary = self.summary_of(room_id).await?;
        let children_state = links
            .iter()
            .map(|link| hierarchy_child_event(&link.event))
            .collect::<Result<Vec<_>>>()?;
        Ok(SpaceHierarchyRoomsChunk::new(summary, children_state))
    }
}

/// A child link from an `m.space.child` event: its state key must be a room ID and its `via` a
/// non-empty list.
fn child_link(event: EventRecord) -> Option<ChildLink> {
    let content = content_of::<JsonValue>(&event.pdu)?;
    let via = content.get("via")?.as_array()?;
    if via.is_empty() {
        return None;
    }
    let room_id = OwnedRoomId::try_from(event.state_key.clone()?).ok()?;
    let order = content.get("order").and_then(JsonValue::as_str).filter(|order| {
        order.len() <= MAX_ORDER_LENGTH && order.chars().all(|c| (' '..='~').contains(&c))
    });
    Some(ChildLink {
        order: order.map(str::to_owned),
        origin_server_ts: event.origin_server_ts,
        room_id,
        suggested: content.get("suggested").and_then(JsonValue::as_bool).unwrap_or(false),
        event,
    })
}

/// The stripped `m.space.child` event the hierarchy shows, with its `origin_server_ts`.
fn hierarchy_child_event<T>(event: &EventRecord) -> Result<Raw<T>> {
    let mut stripped = super::pdu::stripped_state(event);
    stripped["origin_server_ts"] = event.origin_server_ts.into();
    let json = serde_json::value::to_raw_value(&stripped).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Raw::from_json(json))
}

/// The token of the page after `skip` rooms: it repeats the walk's parameters, which a later
/// page may not change.
fn next_token(query: &HierarchyQuery, skip: usize) -> String {
    let depth = query.max_depth.map_or_else(|| "-".to_owned(), |d| d.to_string());
    format!("h{skip}_{}_{depth}", u8::from(query.suggested_only))
}

/// How many rooms of the walk the `from` token says were shown already.
fn parse_from(query: &HierarchyQuery) -> Result<usize> {
    let Some(from) = &query.from else { return Ok(0) };
    let invalid = || Error::invalid_param("Unknown or invalid from token");
    let skip =
        from.strip_prefix('h').and_then(|rest| rest.split('_').next()).ok_or_else(invalid)?;
    let skip: usize = skip.parse().map_err(|_| invalid())?;
    if *from != next_token(query, skip) {
        return Err(Error::invalid_param(
            "suggested_only and max_depth cannot change between the pages of a hierarchy",
        ));
    }
    Ok(skip)
}
