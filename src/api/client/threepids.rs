//! Third-party identifiers: the `requestToken` endpoints (e-mail; phone numbers answer
//! `M_THREEPID_MEDIUM_NOT_SUPPORTED`), the validation link of the mails and the `submit_url`,
//! `GET /account/3pid`, `/account/3pid/add`, `/delete`, `/bind` and `/unbind`. The work is
//! `crate::threepids`'s; these parse, authorize, rate-limit and answer.

use std::sync::Arc;

use ruma::{
    OwnedSessionId, UInt,
    api::client::account::{
        ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, delete_3pid, get_3pids,
        request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
        request_password_change_token_via_email, request_password_change_token_via_msisdn,
        request_registration_token_via_email, request_registration_token_via_msisdn, unbind_3pid,
    },
    thirdparty::{Medium, ThirdPartyIdentifierInit},
};

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    config::{EmailRegistration, RegistrationMode},
    services::Services,
    threepids::{self, EmailTokenRequest, Purpose},
};

pub fn routes(router: &mut Router) {
    router
        .add(get_3pids)
        .add(request_3pid_management_token_via_email)
        .add(request_3pid_management_token_via_msisdn)
        .add(request_registration_token_via_email)
        .add(request_registration_token_via_msisdn)
        .add(request_password_change_token_via_email)
        .add(request_password_change_token_via_msisdn)
        .add(add_3pid)
        .add(delete_3pid)
        .add(bind_3pid)
        .add(unbind_3pid)
        .add(validate_email)
        .add(submit_email_token);
}

/// Hearth's own endpoints: the page the link of a validation mail opens, and the `submit_url`.
pub mod endpoints {
    /// `GET /_hearth/client/v1/3pid/email/validate?sid=&client_secret=&token=`: an HTML page
    /// that says whether the address was validated.
    pub mod validate_email {
        use http::header::CONTENT_TYPE;
        use ruma::api::{auth_scheme::NoAccessToken, request, response};

        ruma::metadata! {
            method: GET,
            rate_limited: false,
            authentication: NoAccessToken,
            history: { unstable => "/_hearth/client/v1/3pid/email/validate", }
        }

        #[request]
        pub struct Request {
            #[ruma_api(query)]
            pub sid: String,
            #[ruma_api(query)]
            pub client_secret: String,
            #[ruma_api(query)]
            pub token: String,
        }

        #[response]
        pub struct Response {
            #[ruma_api(header = CONTENT_TYPE)]
            pub content_type: String,
            #[ruma_api(raw_body)]
            pub page: Vec<u8>,
        }
    }

    /// `POST /_hearth/client/v1/3pid/email/submitToken`, the spec's `submit_url`: the identity
    /// service API's `POST /validate/email/submitToken` without an access token.
    pub mod submit_email_token {
        use ruma::api::{auth_scheme::NoAccessToken, request, response};

        ruma::metadata! {
            method: POST,
            rate_limited: true,
            authentication: NoAccessToken,
            history: { unstable => "/_hearth/client/v1/3pid/email/submitToken", }
        }

        #[request]
        pub struct Request {
            pub sid: String,
            pub client_secret: String,
            pub token: String,
        }

        #[response]
        pub struct Response {
            pub success: bool,
        }
    }
}

use endpoints::{submit_email_token, validate_email};

async fn get_3pids(
    services: Arc<Services>,
    user: User,
    _: get_3pids::v3::Request,
) -> Result<get_3pids::v3::Response> {
    let threepids = services.threepids.list(&user.user_id).await?;
    let threepids = threepids
        .into_iter()
        .map(|record| {
            ThirdPartyIdentifierInit {
                address: record.address,
                medium: Medium::from(record.medium.as_str()),
                validated_at: millis_since_epoch(record.validated_ts),
                added_at: millis_since_epoch(record.added_ts),
            }
            .into()
        })
        .collect();
    Ok(get_3pids::v3::Response::new(threepids))
}

fn millis_since_epoch(ts: i64) -> ruma::MilliSecondsSinceUnixEpoch {
    let millis = UInt::try_from(ts.max(0)).unwrap_or_default();
    ruma::MilliSecondsSinceUnixEpoch(millis)
}

/// Takes one validation mail to `address` (canonical) from the client's and the address's
/// limits.
fn limit_token_requests(services: &Services, client: &Anonymous, address: &str) -> Result<()> {
    services.threepid_ip_limiter.check(client.origin)?;
    services.threepid_address_limiter.check(address.to_owned())
}

/// The session ID and `submit_url` of a `requestToken` answer.
fn session_answer(services: &Services, sid: String) -> Result<(OwnedSessionId, Option<String>)> {
    let sid = OwnedSessionId::try_from(sid)
        .map_err(|_| Error::Internal(anyhow::anyhow!("an invalid session ID was made")))?;
    Ok((sid, Some(services.threepids.submit_url())))
}

async fn request_email_token(
    services: &Services,
    client: &Anonymous,
    purpose: Purpose,
    request: EmailTokenRequest<'_>,
) -> Result<(OwnedSessionId, Option<String>)> {
    if !services.threepids.email_enabled() {
        return Err(threepids::email_not_supported());
    }
    let limit = |address: &str| limit_token_requests(services, client, address);
    let sid = services.threepids.request_email_token(purpose, request, limit).await?;
    session_answer(services, sid)
}

async fn request_3pid_management_token_via_email(
    services: Arc<Services>,
    client: Anonymous,
    request: request_3pid_management_token_via_email::v3::Request,
) -> Result<request_3pid_management_token_via_email::v3::Response> {
    let token_request = EmailTokenRequest {
        client_secret: request.client_secret.as_str(),
        email: &request.email,
        send_attempt: request.send_attempt.into(),
    };
    let (sid, submit_url) =
        request_email_token(&services, &client, Purpose::AddToAccount, token_request).await?;
    let mut response = request_3pid_management_token_via_email::v3::Response::new(sid);
    response.submit_url = submit_url;
    Ok(response)
}

async fn request_registration_token_via_email(
    services: Arc<Services>,
    client: Anonymous,
    request: request_registration_token_via_email::v3::Request,
) -> Result<request_registration_token_via_email::v3::Response> {
    if services.config.registration.mode == RegistrationMode::Closed {
        return Err(Error::forbidden("Registration is closed on this server"));
    }
    if services.threepids.email_at_registration() == EmailRegistration::Off {
        return Err(threepids::email_not_supported());
    }
    let token_request = EmailTokenRequest {
        client_secret: request.client_secret.as_str(),
        email: &request.email,
        send_attempt: request.send_attempt.into(),
    };
    let (sid, submit_url) =
        request_email_token(&services, &client, Purpose::Registration, token_request).await?;
    let mut response = request_registration_token_via_email::v3::Response::new(sid);
    response.submit_url = submit_url;
    Ok(response)
}

/// An address on no account answers `M_THREEPID_NOT_FOUND`, which the spec allows here.
async fn request_password_change_token_via_email(
    services: Arc<Services>,
    client: Anonymous,
    request: request_password_change_token_via_email::v3::Request,
) -> Result<request_password_change_token_via_email::v3::Response> {
    let token_request = EmailTokenRequest {
        client_secret: request.client_secret.as_str(),
        email: &request.email,
        send_attempt: request.send_attempt.into(),
    };
    let (sid, submit_url) =
        request_email_token(&services, &client, Purpose::PasswordReset, token_request).await?;
    let mut response = request_password_change_token_via_email::v3::Response::new(sid);
    response.submit_url = submit_url;
    Ok(response)
}

/// Checks what a phone number `requestToken` gave, then refuses it: Hearth sends no SMS.
fn refuse_msisdn(country: &str, phone_number: &str) -> Error {
    let valid_country = country.len() == 2 && country.chars().all(|c| c.is_ascii_alphabetic());
    let digits = phone_number.chars().filter(char::is_ascii_digit).count();
    if !valid_country {
        return Error::invalid_param("country must be a two-letter country code");
    }
    if digits == 0 || phone_number.len() > 32 {
        return Error::invalid_param("The phone number is not valid");
    }
    threepids::msisdn_not_supported()
}

async fn request_3pid_management_token_via_msisdn(
    _: Arc<Services>,
    _: Anonymous,
    request: request_3pid_management_token_via_msisdn::v3::Request,
) -> Result<request_3pid_management_token_via_msisdn::v3::Response> {
    Err(refuse_msisdn(&request.country, &request.phone_number))
}

async fn request_registration_token_via_msisdn(
    _: Arc<Services>,
    _: Anonymous,
    request: request_registration_token_via_msisdn::v3::Request,
) -> Result<request_registration_token_via_msisdn::v3::Response> {
    Err(refuse_msisdn(&request.country, &request.phone_number))
}

async fn request_password_change_token_via_msisdn(
    _: Arc<Services>,
    _: Anonymous,
    request: request_password_change_token_via_msisdn::v3::Request,
) -> Result<request_password_change_token_via_msisdn::v3::Response> {
    Err(refuse_msisdn(&request.country, &request.phone_number))
}

/// Confirmed with the account's password (user-interactive authentication), then the session
/// must be validated and of the same client secret.
async fn add_3pid(
    services: Arc<Services>,
    user: User,
    request: add_3pid::v3::Request,
) -> Result<add_3pid::v3::Response> {
    super::confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    let validated =
        services.threepids.validated(request.sid.as_str(), request.client_secret.as_str()).await?;
    services.threepids.add(&user.user_id, validated).await?;
    Ok(add_3pid::v3::Response::new())
}

async fn delete_3pid(
    services: Arc<Services>,
    user: User,
    request: delete_3pid::v3::Request,
) -> Result<delete_3pid::v3::Response> {
    let threepid = (request.medium.as_str(), request.address.as_str());
    let id_server = request.id_server.as_deref();
    let unbound = services.threepids.delete(&user.user_id, threepid, id_server).await?;
    Ok(delete_3pid::v3::Response::new(removal_status(unbound)))
}

async fn bind_3pid(
    services: Arc<Services>,
    user: User,
    request: bind_3pid::v3::Request,
) -> Result<bind_3pid::v3::Response> {
    let info = &request.identity_server_info;
    let creds = (request.sid.as_str(), request.client_secret.as_str());
    let (id_server, id_access_token) = (info.id_server.as_str(), info.id_access_token.as_str());
    services.threepids.bind(&user.user_id, id_server, id_access_token, creds).await?;
    Ok(bind_3pid::v3::Response::new())
}

async fn unbind_3pid(
    services: Arc<Services>,
    user: User,
    request: unbind_3pid::v3::Request,
) -> Result<unbind_3pid::v3::Response> {
    let threepid = (request.medium.as_str(), request.address.as_str());
    let id_server = request.id_server.as_deref();
    let unbound = services.threepids.unbind(&user.user_id, threepid, id_server).await?;
    Ok(unbind_3pid::v3::Response::new(removal_status(unbound)))
}

fn removal_status(unbound: bool) -> ThirdPartyIdRemovalStatus {
    if unbound { ThirdPartyIdRemovalStatus::Success } else { ThirdPartyIdRemovalStatus::NoSupport }
}

/// The page of the link in a validation mail: always a page (a person reads it), saying what
/// happened; `submitToken` answers the same in JSON.
async fn validate_email(
    services: Arc<Services>,
    _: Anonymous,
    request: validate_email::Request,
) -> Result<validate_email::Response> {
    let outcome =
        services.threepids.submit_token(&request.sid, &request.client_secret, &request.token).await;
    let message = match outcome {
        Ok(()) => "Your e-mail address is confirmed. You can close this page and go back to \
                   your Matrix app."
            .to_owned(),
        Err(Error::Client { message, .. }) => format!("The address was not confirmed: {message}."),
        Err(error) => return Err(error),
    };
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Hearth</title></head>\
         <body><p>{message}</p></body></html>\n"
    );
    Ok(validate_email::Response {
        content_type: "text/html; charset=utf-8".to_owned(),
        page: page.into_bytes(),
    })
}

async fn submit_email_token(
    services: Arc<Services>,
    _: Anonymous,
    request: submit_email_token::Request,
) -> Result<submit_email_token::Response> {
    services.threepids.submit_token(&request.sid, &request.client_secret, &request.token).await?;
    Ok(submit_email_token::Response { success: true })
}
