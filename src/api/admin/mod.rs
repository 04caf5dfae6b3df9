//! Hearth's own admin API under `/_hearth/admin/v1/`, for the admin page and scripts. Every
//! endpoint needs the access token of a server administrator; anyone else gets 403.
//!
//! The endpoints are declared with ruma's endpoint macros, like the spec's, so they go through
//! the same router, parsing and error replies.

mod database;

use crate::{Error, Result, api::router::User, services::Services};

use super::router::Router;

/// Registers every admin endpoint.
pub fn register(router: &mut Router) {
    database::routes(router);
}

/// Refuses users who are not server administrators.
async fn require_admin(services: &Services, user: &User) -> Result<()> {
    if services.users.is_admin(&user.user_id).await? {
        Ok(())
    } else {
        Err(Error::forbidden("Only a server administrator may do this"))
    }
}
