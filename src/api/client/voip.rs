//! `GET /voip/turnServer`: the TURN server and credentials for calls, from `[voip]`
//! (`crate::voip` makes the credentials).
//!
//! With no TURN server configured the answer is `200 {}`, as Synapse gives: the spec's schema
//! lists the four fields as required and has no other answer for "none", and clients take an
//! empty object to mean "no TURN server" (matrix-js-sdk then calls without one), whereas an empty
//! `uris` list would reach the browser as an ICE server without URLs, which `RTCPeerConnection`
//! refuses. ruma's response type requires the four fields, so the endpoint is declared here.

use std::{sync::Arc, time::SystemTime};

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
    voip::turn_credentials,
};

pub fn routes(router: &mut Router) {
    router.add(get_turn_server_info);
}

/// `GET /_matrix/client/v3/voip/turnServer`, declared with ruma's endpoint macros as
/// `ruma::api::client::voip::get_turn_server_info::v3` declares it, but with every field of the
/// response optional.
pub mod get_turn_server_info {
    pub mod v3 {
        use ruma::api::{auth_scheme::AccessToken, request, response};

        ruma::metadata! {
            method: GET,
            rate_limited: true,
            authentication: AccessToken,
            history: {
                1.0 => "/_matrix/client/r0/voip/turnServer",
                1.1 => "/_matrix/client/v3/voip/turnServer",
            }
        }

        #[request]
        pub struct Request {}

        /// The credentials, or nothing at all when no TURN server is configured.
        #[response]
        #[derive(Default)]
        pub struct Response {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub username: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub password: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub uris: Option<Vec<String>>,
            /// Seconds the credentials are valid.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub ttl: Option<u64>,
        }
    }
}

async fn get_turn_server_info(
    services: Arc<Services>,
    user: User,
    _: get_turn_server_info::v3::Request,
) -> Result<get_turn_server_info::v3::Response> {
    let credentials = turn_credentials(&services.config.voip, &user.user_id, SystemTime::now())?;
    let Some(credentials) = credentials else {
        return Ok(get_turn_server_info::v3::Response::default());
    };
    Ok(get_turn_server_info::v3::Response {
        username: Some(credentials.username),
        password: Some(credentials.password),
        uris: Some(credentials.uris),
        ttl: Some(credentials.ttl.as_secs()),
    })
}
