//! `GET /mutual_rooms`: the rooms the user shares with another user (see
//! [`crate::rooms::mutual`]).

use std::sync::Arc;

use ruma::{UInt, api::client::membership::get_mutual_rooms};

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(get_mutual_rooms);
}

async fn get_mutual_rooms(
    services: Arc<Services>,
    user: User,
    request: get_mutual_rooms::v1::Request,
) -> Result<get_mutual_rooms::v1::Response> {
    let page = services
        .rooms
        .mutual_rooms(&user.user_id, &request.user_id, request.from.as_deref())
        .await?;
    let count = UInt::try_from(page.count).unwrap_or(UInt::MAX);
    let mut response = get_mutual_rooms::v1::Response::new(count, page.joined);
    response.next_batch = page.next_batch;
    Ok(response)
}
