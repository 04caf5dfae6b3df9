//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding sync
//! (MSC4186), answered by [`crate::sync::sliding_sync`].

use std::sync::Arc;

use ruma::api::client::sync::sync_events::v5;

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(sync_events);
}

/// The handler of ruma's `sync_events::v5` endpoint.
async fn sync_events(
    services: Arc<Services>,
    user: User,
    request: v5::Request,
) -> Result<v5::Response> {
    // `set_presence` is accepted; presence itself is not tracked yet.
    crate::sync::sliding_sync(&services, user.user_id, user.device_id.to_string(), request).await
}
