//! Leaves what ignored users sent out of a sync response (client-server API, "Ignoring Users"):
//! their timeline events other than state events, and the invites they sent. A joined room of an
//! incremental sync that had nothing else to show is left out as a whole, so that a long-poll
//! keeps waiting instead of answering with an empty room.
//!
//! The list is applied as it is when the response is made: after a change of the list, the next
//! sync carries the new `m.ignored_user_list` account data and applies the new list from then on.
//! FIXME: a user who is no longer ignored does not get their earlier events re-sent; clients are
//! expected to resync (the spec leaves that to them). Typing and receipts of ignored users are
//! still shown.

use ruma::{
    OwnedUserId, UserId,
    api::client::sync::sync_events::v3::{Response, Timeline},
    serde::Raw,
};

use crate::users::ignored::{IgnoredUsers, is_ignored};

/// Removes what users in `ignored` sent from the response of `user_id`'s sync.
pub fn leave_out(
    response: &mut Response,
    user_id: &UserId,
    ignored: &IgnoredUsers,
    incremental: bool,
) {
    if ignored.is_empty() {
        return;
    }
    let rooms = &mut response.rooms;
    rooms.join.retain(|_, room| {
        let removed = leave_out_of_timeline(&mut room.timeline, ignored);
        let nothing_left = room.timeline.events.is_empty()
            && room.state.is_empty()
            && room.ephemeral.is_empty()
            && room.account_data.is_empty();
        !(incremental && removed && nothing_left)
    });
    for room in rooms.leave.values_mut() {
        leave_out_of_timeline(&mut room.timeline, ignored);
    }
    rooms.invite.retain(|_, room| {
        let inviter =
            room.invite_state.events.iter().find_map(|event| invite_sender(event, user_id));
        inviter.is_none_or(|sender| !ignored.contains(&sender))
    });
}

/// Removes the ignored users' events; whether any was removed.
fn leave_out_of_timeline(timeline: &mut Timeline, ignored: &IgnoredUsers) -> bool {
    let before = timeline.events.len();
    timeline.events.retain(|event| {
        let sender = event.get_field::<OwnedUserId>("sender").ok().flatten();
        let is_state =
            event.get_field::<serde::de::IgnoredAny>("state_key").ok().flatten().is_some();
        sender.is_none_or(|sender| !is_ignored(ignored, &sender, is_state))
    });
    timeline.events.len() != before
}

/// The sender of the invite of `user_id`, if `event` is that invite.
fn invite_sender<T>(event: &Raw<T>, user_id: &UserId) -> Option<OwnedUserId> {
    let event_type = event.get_field::<String>("type").ok().flatten()?;
    let state_key = event.get_field::<String>("state_key").ok().flatten()?;
    if event_type != "m.room.member" || state_key != user_id.as_str() {
        return None;
    }
    event.get_field("sender").ok().flatten()
}
