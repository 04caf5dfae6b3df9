//! `GET /_matrix/federation/v1/openid/userinfo`: a third party (an integration manager) that a
//! user gave an OpenID token asks who the token belongs to. The token comes in the query string,
//! as the spec has it; it is a credential, so it is never logged (the request span names the route
//! template only).

use std::sync::Arc;

use ruma::api::federation::openid::get_openid_userinfo;

use crate::{
    Result,
    api::router::{Anonymous, Router},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(get_openid_userinfo);
}

/// Not rate-limited, as the spec has it: an integration manager asks for each user who opens it,
/// and a token of 40 random letters and digits cannot be guessed.
async fn get_openid_userinfo(
    services: Arc<Services>,
    _: Anonymous,
    request: get_openid_userinfo::v1::Request,
) -> Result<get_openid_userinfo::v1::Response> {
    let user_id = services.users.openid_user(&request.access_token).await?;
    Ok(get_openid_userinfo::v1::Response::new(user_id))
}
