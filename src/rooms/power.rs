//! Power levels as ruma computes them, from a room's current state.

use ruma::{
    OwnedUserId, RoomId, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    room_version_rules::RoomVersionRules,
};
use serde::Deserialize;

use crate::{Result, store::RoomTxn};

#[derive(Deserialize)]
struct CreateContent {
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// The room's power levels, counting its creators as privileged where the room version says so.
pub fn load(txn: &dyn RoomTxn, room_id: &RoomId, rules: &RoomVersionRules) -> Result<RoomPowerLevels> {
    let content = txn
        .current_state_event(room_id, "m.room.power_levels", "")?
        .and_then(|record| content_of::<RoomPowerLevelsEventContent>(&record.pdu));
    let creators = creators(txn, room_id, rules)?;
    Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators))
}

/// The sender of the create event and, from version 12, its `additional_creators`.
pub fn creators(txn: &dyn RoomTxn, room_id: &RoomId, rules: &RoomVersionRules) -> Result<Vec<OwnedUserId>> {
    let Some(create) = txn.current_state_event(room_id, "m.room.create", "")? else {
        return Ok(Vec::new());
    };
    let mut creators = vec![create.sender.clone()];
    if rules.authorization.additional_room_creators
        && let Some(content) = content_of::<CreateContent>(&create.pdu)
    {
        creators.extend(content.additional_creators);
    }
    Ok(creators)
}

/// Whether `user_id` may redact other users' events.
pub fn may_redact_others(txn: &dyn RoomTxn, room_id: &RoomId, rules: &RoomVersionRules, user_id: &UserId) -> Result<bool> {
    Ok(load(txn, room_id, rules)?.user_can_redact_event_of_other(user_id))
}

/// Deserializes the `content` of a stored PDU.
pub fn content_of<T: for<'de> Deserialize<'de>>(pdu: &str) -> Option<T> {
    #[derive(Deserialize)]
    struct WithContent<T> {
        content: T,
    }
    serde_json::from_str::<WithContent<T>>(pdu).ok().map(|w| w.content)
}
