//! `POST /search`: server-side search of room events (the one category the spec defines).

use std::sync::Arc;

use ruma::api::client::search::search_events::{self, v3::ResultCategories};

use crate::{
    Error, Result,
    api::router::{Router, User},
    search::SearchRequest,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(search_events);
}

async fn search_events(
    services: Arc<Services>,
    user: User,
    request: search_events::v3::Request,
) -> Result<search_events::v3::Response> {
    // ruma keeps only the categories it knows: a request without `room_events` asked for none
    // that exists.
    let Some(criteria) = request.search_categories.room_events else {
        return Err(Error::invalid_param("Unknown search category: only room_events is searched"));
    };
    let request = SearchRequest {
        user_id: user.user_id,
        device_id: user.device_id.to_string(),
        criteria,
        next_batch: request.next_batch,
    };
    let mut categories = ResultCategories::new();
    categories.room_events = crate::search::search_room_events(&services, request).await?;
    Ok(search_events::v3::Response::new(categories))
}
