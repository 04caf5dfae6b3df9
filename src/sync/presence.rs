//! The `presence` section of `/sync`: the presence of the user and of those sharing a joined room
//! with them, for the users whose presence changed after the token (everyone's for an initial
//! sync or a token without a presence part).
//!
//! Only the changed users are looked at, and the room members come from the notifier's cache, so
//! a sync after which nobody changed costs one lock.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, events::presence::PresenceEvent, serde::Raw};
use serde_json::json;

use super::SyncRequest;
use crate::{Result, presence::PresenceView, services::Services, store::MembershipRecord};

/// The presence events the sync carries.
pub(super) async fn presence_events(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
) -> Result<Vec<Raw<PresenceEvent>>> {
    let filter = &request.filter.presence;
    if !filter.matches_type("m.presence") {
        return Ok(Vec::new());
    }
    let since = request.since.and(request.since_presence);
    let mut changed = services.presence.changed_since(since);
    let senders_allowed = |user_id: &OwnedUserId| {
        let sender = user_id.as_str();
        filter.senders.as_ref().is_none_or(|s| s.iter().any(|x| x == sender))
            && !filter.not_senders.iter().any(|x| x == sender)
    };
    changed.retain(|view| senders_allowed(&view.user_id));
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let sharing = sharing_a_room(services, request, memberships).await?;
    changed.retain(|view| sharing.contains(&view.user_id));
    if let Some(limit) = filter.limit {
        changed.truncate(limit);
    }
    changed.iter().map(presence_event).collect()
}

/// The user and everyone joined to a room the user is joined to.
async fn sharing_a_room(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
) -> Result<BTreeSet<OwnedUserId>> {
    let mut users = BTreeSet::from([request.user_id.clone()]);
    for membership in memberships.iter().filter(|m| m.membership == "join") {
        users.extend(services.notifier.members_for_reading(&membership.room_id).await?);
    }
    Ok(users)
}

/// An `m.presence` event.
pub fn presence_event(view: &PresenceView) -> Result<Raw<PresenceEvent>> {
    let mut content = json!({
        "presence": view.presence.as_str(),
        "currently_active": view.currently_active,
    });
    if let Some(ago) = view.last_active_ago {
        content["last_active_ago"] = json!(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX));
    }
    if let Some(status_msg) = &view.status_msg {
        content["status_msg"] = json!(status_msg);
    }
    let event = json!({ "type": "m.presence", "sender": view.user_id, "content": content });
    let json = serde_json::value::to_raw_value(&event).map_err(anyhow::Error::from)?;
    Ok(Raw::from_json(json))
}
