//! Power levels as ruma computes them, from a room's current state.

use ruma::{
    OwnedUserId, RoomId, UserId,
    events::room::power_levels::{
        RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
    },
    room_version_rules::RoomVersionRules,
};
use serde::Deserialize;

use crate::{
    Result,
    store::{EventRecord, RoomTxn},
};

#[derive(Deserialize)]
struct CreateContent {
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// The room's power levels, counting its creators as privileged where the room version says so.
pub fn load(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    rules: &RoomVersionRules,
) -> Result<RoomPowerLevels> {
    let create = txn.current_state_event(room_id, "m.room.create", "")?;
    let power_levels = txn.current_state_event(room_id, "m.room.power_levels", "")?;
    Ok(from_state(create.as_ref(), power_levels.as_ref(), rules))
}

/// Power levels from a room's create and power levels events.
pub fn from_state(
    create: Option<&EventRecord>,
    power_levels: Option<&EventRecord>,
    rules: &RoomVersionRules,
) -> RoomPowerLevels {
    let content =
        power_levels.and_then(|record| content_of::<RoomPowerLevelsEventContent>(&record.pdu));
    let creators = create.map(|create| creators_of(create, rules)).unwrap_or_default();
    RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators)
}

/// The sender of the create event and, from version 12, its `additional_creators`.
pub fn creators(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    rules: &RoomVersionRules,
) -> Result<Vec<OwnedUserId>> {
    let create = txn.current_state_event(room_id, "m.room.create", "")?;
    Ok(create.map(|create| creators_of(&create, rules)).unwrap_or_default())
}

fn creators_of(create: &EventRecord, rules: &RoomVersionRules) -> Vec<OwnedUserId> {
    let mut creators = vec![create.sender.clone()];
    if rules.authorization.additional_room_creators
        && let Some(content) = content_of::<CreateContent>(&create.pdu)
    {
        creators.extend(content.additional_creators);
    }
    creators
}

/// Whether `user_id` may redact other users' events.
pub fn may_redact_others(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    user_id: &UserId,
) -> Result<bool> {
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
