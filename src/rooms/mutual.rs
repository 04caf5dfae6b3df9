//! The rooms two users share (`GET /mutual_rooms`): both joined, sorted by room ID, in pages
//! whose token is the last room ID of the page before.

use ruma::{OwnedRoomId, UserId};

use super::Rooms;
use crate::{Error, Result};

/// How many rooms a page of mutual rooms holds.
pub const MUTUAL_ROOMS_PAGE: usize = 100;

/// One page of the rooms two users share.
#[derive(Debug)]
pub struct MutualRoomsPage {
    pub joined: Vec<OwnedRoomId>,
    /// How many rooms they share in all.
    pub count: usize,
    pub next_batch: Option<String>,
}

impl Rooms {
    /// The rooms `user_id` and `other` are both joined to, after the room the token names.
    pub async fn mutual_rooms(
        &self,
        user_id: &UserId,
        other: &UserId,
        from: Option<&str>,
    ) -> Result<MutualRoomsPage> {
        if user_id == other {
            return Err(Error::invalid_param("user_id is your own user ID"));
        }
        if other.is_historical() {
            return Err(Error::invalid_param("user_id is not a valid user ID"));
        }
        let after = from.map(parse_token).transpose()?;
        let mine = self.joined_rooms(user_id).await?;
        let theirs = self.joined_rooms(other).await?;
        let mut shared: Vec<OwnedRoomId> =
            mine.into_iter().filter(|room_id| theirs.contains(room_id)).collect();
        shared.sort();
        let count = shared.len();
        let page: Vec<OwnedRoomId> = shared
            .into_iter()
            .filter(|room_id| after.as_ref().is_none_or(|after| room_id > after))
            .take(MUTUAL_ROOMS_PAGE + 1)
            .collect();
        Ok(paged(page, count))
    }

    async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        let memberships = self.store().memberships_of(user_id).await?;
        Ok(memberships.into_iter().filter(|m| m.membership == "join").map(|m| m.room_id).collect())
    }
}

/// Cuts a page of up to one room more than it holds, naming the last it keeps as the token.
fn paged(mut joined: Vec<OwnedRoomId>, count: usize) -> MutualRoomsPage {
    let more = joined.len() > MUTUAL_ROOMS_PAGE;
    joined.truncate(MUTUAL_ROOMS_PAGE);
    let next_batch = more.then(|| joined.last().map(|room_id| format!("m{room_id}"))).flatten();
    MutualRoomsPage { joined, count, next_batch }
}

fn parse_token(token: &str) -> Result<OwnedRoomId> {
    token
        .strip_prefix('m')
        .and_then(|room_id| OwnedRoomId::try_from(room_id).ok())
        .ok_or_else(|| Error::invalid_param("Unknown or invalid from token"))
}
