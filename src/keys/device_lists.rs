//! Whose device lists a user must hear about: `device_lists` in `/sync` and `GET /keys/changes`.
//!
//! `changed` names the users sharing a room with the user whose devices or keys changed after
//! the token, and the users who came to share a room with them since (their keys are new to the
//! user's devices); `left` names the users who shared a room then and share none now.
//!
//! FIXME: every room counts, not only encrypted ones as the spec says; this sends a few more
//! users than needed, never fewer.

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId};

use super::Keys;
use crate::{Result, store::MembershipRecord};

/// The users of a device-list update, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceListUpdates {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

impl Keys {
    /// The device-list changes `user_id` has to hear about between the stream positions
    /// `since` and `upto`.
    pub async fn device_list_updates(
        &self,
        user_id: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<DeviceListUpdates> {
        let memberships = self.store.memberships_of(user_id).await?;
        let joined: Vec<&MembershipRecord> =
            memberships.iter().filter(|m| m.membership == "join").collect();
        let shared = self.shared_users(&joined).await?;

        let mut changed: BTreeSet<OwnedUserId> = BTreeSet::new();
        for (changed_user, _) in self.store.device_list_changes(since).await? {
            if shared.contains(&changed_user) {
                changed.insert(changed_user);
            }
        }
        let mut left = BTreeSet::new();
        let (newly_joined, before): (Vec<&&MembershipRecord>, Vec<_>) =
            joined.iter().partition(|m| m.stream_position > since);
        for membership in newly_joined {
            changed.extend(self.store.members_with(&membership.room_id, "join").await?);
        }
        let earlier: Vec<OwnedRoomId> = before.iter().map(|m| m.room_id.clone()).collect();
        for room_id in self.store.rooms_changed(&earlier, since, upto).await? {
            for (member, membership) in self.membership_changes(&room_id, since, upto).await? {
                match membership.as_str() {
                    "join" => changed.insert(member),
                    _ if !shared.contains(&member) => left.insert(member),
                    _ => false,
                };
            }
        }
        for membership in
            memberships.iter().filter(|m| m.membership != "join" && m.stream_position > since)
        {
            for member in self.store.members_with(&membership.room_id, "join").await? {
                if !shared.contains(&member) {
                    left.insert(member);
                }
            }
        }
        left.remove(user_id);
        Ok(DeviceListUpdates {
            changed: changed.into_iter().collect(),
            left: left.into_iter().collect(),
        })
    }

    /// Everyone joined to one of the rooms (the user among them).
    async fn shared_users(&self, joined: &[&MembershipRecord]) -> Result<BTreeSet<OwnedUserId>> {
        let mut shared = BTreeSet::new();
        for membership in joined {
            shared.extend(self.store.members_with(&membership.room_id, "join").await?);
        }
        Ok(shared)
    }

    /// The members whose membership changed in `(since, upto]`, with their membership now.
    async fn membership_changes(
        &self,
        room_id: &ruma::RoomId,
        since: i64,
        upto: i64,
    ) -> Result<Vec<(OwnedUserId, String)>> {
        let mut changes = Vec::new();
        for event in self.store.state_changes(room_id, since, upto).await? {
            if event.event_type != "m.room.member" {
                continue;
            }
            let Some(member) =
                event.state_key.as_deref().and_then(|k| OwnedUserId::try_from(k).ok())
            else {
                continue;
            };
            let pdu: serde_json::Value =
                serde_json::from_str(&event.pdu).map_err(anyhow::Error::from)?;
            let membership = pdu["content"]["membership"].as_str().unwrap_or_default().to_owned();
            changes.push((member, membership));
        }
        Ok(changes)
    }
}
