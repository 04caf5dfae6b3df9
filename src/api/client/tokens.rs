//! Tokens besides login: refreshing an access token (`POST /refresh`), a single-use login token
//! for another device (`POST /login/get_token`) and an OpenID token for a third party
//! (`POST /user/{userId}/openid/request_token`). The rules are in `crate::users::tokens`.

use std::sync::Arc;

use ruma::{
    api::client::{
        account::request_openid_token,
        session::{get_login_token, refresh_token},
    },
    authentication::TokenType,
};

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(refresh_token).add(get_login_token).add(request_openid_token);
}

/// Needs no access token: the refresh token is the credential, so refreshes count against the
/// client address's login attempts.
async fn refresh_token(
    services: Arc<Services>,
    client: Anonymous,
    request: refresh_token::v3::Request,
) -> Result<refresh_token::v3::Response> {
    services.login_limiter.check(client.origin)?;
    let refreshed = services.users.refresh(&request.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(refreshed.access_token);
    response.refresh_token = Some(refreshed.refresh_token);
    response.expires_in_ms = Some(refreshed.expires_in);
    Ok(response)
}

/// The spec asks to confirm every request with user-interactive authentication, never skipped
/// for a recent one: each completed UIA session is used up.
async fn get_login_token(
    services: Arc<Services>,
    user: User,
    request: get_login_token::v1::Request,
) -> Result<get_login_token::v1::Response> {
    super::confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    let (token, expires_in) = services.users.create_login_token(&user.user_id).await?;
    Ok(get_login_token::v1::Response::new(expires_in, token))
}

async fn request_openid_token(
    services: Arc<Services>,
    user: User,
    request: request_openid_token::v3::Request,
) -> Result<request_openid_token::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("OpenID tokens can only be requested for yourself"));
    }
    let (token, expires_in) = services.users.create_openid_token(&user.user_id).await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        services.server_name().to_owned(),
        expires_in,
    ))
}
