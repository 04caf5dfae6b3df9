//! `/_hearth/admin/v1/database/migration`: move the running server's data to PostgreSQL, or
//! back to SQLite.
//!
//! - `POST {"to": URL}` (a PostgreSQL URL, or `"sqlite"` for the way back) checks the target and
//!   starts the move; the answer is its progress. A move to where the data is already, or while
//!   another move runs, is refused (400, 409).
//! - `GET` reports the progress of the running move, or the outcome of the last one.
//! - `DELETE` cancels the running move (it stops at its next batch; Hearth keeps serving from
//!   the backend it was on and a later move starts over). With no move running, it gives up
//!   what an unfinished one left (a move that failed, or ran when the server died): its change
//!   log goes from the database that holds the data.

use std::sync::Arc;

use super::require_admin;
use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(start_migration).add(get_migration).add(cancel_migration);
}

/// The endpoints' wire types.
pub mod endpoints {
    use ruma::api::{auth_scheme::AccessToken, request, response};

    use crate::migrate::Progress;

    /// `POST /_hearth/admin/v1/database/migration`
    pub mod start {
        use super::*;

        ruma::metadata! {
            method: POST,
            rate_limited: false,
            authentication: AccessToken,
            history: { unstable => "/_hearth/admin/v1/database/migration", }
        }

        #[request]
        pub struct Request {
            /// The PostgreSQL database to move to, as a connection URL, or `sqlite` to move
            /// back to a new `hearth.db` in the data directory.
            pub to: String,
        }

        #[response]
        pub struct Response {
            #[ruma_api(body)]
            pub progress: Progress,
        }
    }

    /// `GET /_hearth/admin/v1/database/migration`
    pub mod get {
        use super::*;

        ruma::metadata! {
            method: GET,
            rate_limited: false,
            authentication: AccessToken,
            history: { unstable => "/_hearth/admin/v1/database/migration", }
        }

        #[request]
        pub struct Request {}

        #[response]
        pub struct Response {
            #[ruma_api(body)]
            pub progress: Progress,
        }
    }

    /// `DELETE /_hearth/admin/v1/database/migration`
    pub mod cancel {
        use super::*;

        ruma::metadata! {
            method: DELETE,
            rate_limited: false,
            authentication: AccessToken,
            history: { unstable => "/_hearth/admin/v1/database/migration", }
        }

        #[request]
        pub struct Request {}

        #[response]
        pub struct Response {
            #[ruma_api(body)]
            pub progress: Progress,
        }
    }
}

use endpoints::{cancel, get, start};

async fn start_migration(
    services: Arc<Services>,
    user: User,
    request: start::Request,
) -> Result<start::Response> {
    require_admin(&services, &user).await?;
    let progress = services.admin.start_move(&request.to).await?;
    Ok(start::Response { progress })
}

async fn get_migration(
    services: Arc<Services>,
    user: User,
    _: get::Request,
) -> Result<get::Response> {
    require_admin(&services, &user).await?;
    Ok(get::Response { progress: services.admin.move_progress()? })
}

async fn cancel_migration(
    services: Arc<Services>,
    user: User,
    _: cancel::Request,
) -> Result<cancel::Response> {
    require_admin(&services, &user).await?;
    Ok(cancel::Response { progress: services.admin.cancel_move().await? })
}
