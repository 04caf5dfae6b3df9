//! Room tags: the `m.tag` room account data that clients sort rooms by (`m.favourite`,
//! `m.lowpriority`, and tags of the user's own).
//!
//! Adding or removing one tag rewrites the room's whole `m.tag` content, so the changes are
//! serialized ([`Users::lock_account_data`]): two tags set at once must both be kept.

use ruma::{
    RoomId, UserId,
    events::tag::{TagEventContent, TagInfo, TagName, Tags},
};

use super::Users;
use crate::{Error, Result};

/// The room account data type that holds the tags.
const TAG_TYPE: &str = "m.tag";
/// The longest tag name accepted, in bytes.
const MAX_TAG_BYTES: usize = 255;

impl Users {
    /// The room's tags for the user (none if they never tagged it).
    pub async fn tags(&self, user_id: &UserId, room_id: &RoomId) -> Result<Tags> {
        let stored = self.store.account_data(user_id, Some(room_id), TAG_TYPE).await?;
        // Content that another client stored by hand in a shape that is not tags counts as none.
        Ok(stored
            .and_then(|raw| serde_json::from_str::<TagEventContent>(raw.get()).ok())
            .map(|content| content.tags)
            .unwrap_or_default())
    }

    /// Adds (or replaces) a tag on the room.
    pub async fn set_tag(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        info: TagInfo,
    ) -> Result<()> {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid_param("A tag has 1 to 255 bytes"));
        }
        if info.order.is_some_and(|order| !order.is_finite()) {
            return Err(Error::invalid_param("The tag's order is not a number"));
        }
        let _serial = self.lock_account_data().await;
        let mut tags = self.tags(user_id, room_id).await?;
        tags.insert(TagName::from(tag), info);
        self.store_tags(user_id, room_id, tags).await
    }

    /// Removes a tag from the room; removing a tag it does not have is no error.
    pub async fn delete_tag(&self, user_id: &UserId, room_id: &RoomId, tag: &str) -> Result<()> {
        let _serial = self.lock_account_data().await;
        let mut tags = self.tags(user_id, room_id).await?;
        if tags.remove(&TagName::from(tag)).is_none() {
            return Ok(());
        }
        self.store_tags(user_id, room_id, tags).await
    }

    async fn store_tags(&self, user_id: &UserId, room_id: &RoomId, tags: Tags) -> Result<()> {
        let content = serde_json::value::to_raw_value(&TagEventContent::new(tags))
            .map_err(anyhow::Error::from)?;
        self.set_account_data(user_id, Some(room_id), TAG_TYPE, &content).await
    }
}
