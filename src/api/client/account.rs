//! Accounts and sessions: registration, login (with a password or a login token), logout,
//! whoami, password, deactivation, and the (always empty) list of third-party identifiers.
//! Refreshing and the other tokens are in `tokens.rs`.

use std::sync::Arc;

use crate::users::{NewDevice, PasswordChange};
use ruma::api::client::{
    account::{
        change_password, check_registration_token_validity, deactivate, get_3pids,
        get_username_availability,
        register::{self, RegistrationKind},
        whoami,
    },
    session::{get_login_types, login, logout, logout_all},
    uiaa::{AuthType, UserIdentifier},
};

use crate::{
    Error, Result,
    api::router::{Anonymous, EvenIfLocked, Router, User},
    config::RegistrationMode,
    services::Services,
    users::uiaa::UiaaContext,
};

pub fn routes(router: &mut Router) {
    router
        .add(register)
        .add(get_username_availability)
        .add(check_registration_token_validity)
        .add(get_login_types)
        .add(login)
        .add(logout)
        .add(logout_all)
        .add(whoami)
        .add(change_password)
        .add(deactivate)
        .add(get_3pids);
}

/// Hearth keeps no third-party identifiers (e-mail addresses, phone numbers): it cannot verify
/// them, as it sends neither mail nor SMS, and `/capabilities` says they cannot be changed. The
/// list is always empty; the endpoints that would add, bind or remove one are not served.
async fn get_3pids(
    _: Arc<Services>,
    _: User,
    _: get_3pids::v3::Request,
) -> Result<get_3pids::v3::Response> {
    Ok(get_3pids::v3::Response::new(Vec::new()))
}

/// The UIA flows of registration in the configured mode.
fn registration_flows(mode: RegistrationMode) -> Vec<Vec<AuthType>> {
    match mode {
        RegistrationMode::Open => vec![vec![AuthType::Dummy]],
        RegistrationMode::Token => vec![vec![AuthType::RegistrationToken]],
        RegistrationMode::Closed => Vec::new(),
    }
}

async fn register(
    services: Arc<Services>,
    client: Anonymous,
    request: register::v3::Request,
) -> Result<register::v3::Response> {
    if request.login_type == Some(register::LoginType::ApplicationService) {
        return register_appservice_user(&services, client, request).await;
    }
    let config = &services.config.registration;
    if config.mode == RegistrationMode::Closed {
        return Err(Error::forbidden("Registration is closed on this server"));
    }
    if request.kind == RegistrationKind::Guest {
        return Err(Error::forbidden("Guest access is not available on this server"));
    }
    services.login_limiter.check(client.origin)?;
    let user_id = match &request.username {
        Some(name) => Some(services.users.user_id_for_localpart(&name.to_lowercase())?),
        None => None,
    };
    if let Some(user_id) = &user_id {
        services.appservices.require_not_claimed(user_id, None)?;
        if services.users.is_taken(user_id).await? {
            return Err(user_in_use());
        }
    }
    let password = request.password.clone().filter(|p| !p.is_empty());
    if password.is_none() {
        return Err(Error::missing_param("A password is required"));
    }
    // Checked before the account exists, so a bad device never leaves a half-registration.
    crate::users::check_new_device(
        request.device_id.as_ref().map(|id| id.as_str()),
        request.initial_device_display_name.as_deref(),
    )?;
    let context = UiaaContext { user_id: None, registration_tokens: &config.tokens };
    let flows = registration_flows(config.mode);
    services.uiaa.check(&services.users, &flows, request.auth.as_ref(), context).await?;

    let user_id = match user_id {
        Some(user_id) => {
            services.users.create(&user_id, password, false).await?;
            user_id
        }
        None => services.users.create_random(password).await?,
    };
    registered(&services, user_id, request).await
}

/// The answer to a registration: the new user, and a session unless `inhibit_login`.
async fn registered(
    services: &Services,
    user_id: ruma::OwnedUserId,
    request: register::v3::Request,
) -> Result<register::v3::Response> {
    let mut response = register::v3::Response::new(user_id.clone());
    if !request.inhibit_login {
        let device = NewDevice {
            device_id: request.device_id.map(|d| d.to_string()),
            display_name: request.initial_device_display_name,
        };
        let session = services.users.issue_session(&user_id, device, request.refresh_token).await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id.into());
        response.refresh_token = session.refresh_token;
        response.expires_in = session.expires_in;
    }
    Ok(response)
}

/// Registration by an application service of a user in its namespaces (`type:
/// m.login.application_service` with its `as_token`): no password or user-interactive
/// authentication, and allowed whatever the registration mode.
async fn register_appservice_user(
    services: &Services,
    client: Anonymous,
    request: register::v3::Request,
) -> Result<register::v3::Response> {
    let Some(service) = client.appservice else {
        return Err(Error::unknown_token(
            "m.login.application_service needs an application service's as_token",
        ));
    };
    if service.is_rate_limited() {
        services.login_limiter.check(client.origin)?;
    }
    let name = request
        .username
        .as_deref()
        .ok_or_else(|| Error::missing_param("An application service must give a username"))?;
    let user_id = services.users.user_id_for_localpart(&name.to_lowercase())?;
    if !service.is_user_interesting(&user_id) {
        return Err(crate::appservice::exclusive(
            "The user ID is not in the application service's namespaces",
        ));
    }
    services.appservices.require_not_claimed(&user_id, Some(&service))?;
    if services.users.is_taken(&user_id).await? {
        return Err(user_in_use());
    }
    crate::users::check_new_device(
        request.device_id.as_ref().map(|id| id.as_str()),
        request.initial_device_display_name.as_deref(),
    )?;
    services.users.create(&user_id, None, false).await?;
    registered(services, user_id, request).await
}

fn user_in_use() -> Error {
    Error::client(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::UserInUse,
        "This user name is taken",
    )
}

async fn get_username_availability(
    services: Arc<Services>,
    client: Anonymous,
    request: get_username_availability::v3::Request,
) -> Result<get_username_availability::v3::Response> {
    services.login_limiter.check(client.origin)?;
    let user_id = services.users.user_id_for_localpart(&request.username)?;
    services.appservices.require_not_claimed(&user_id, None)?;
    if services.users.is_taken(&user_id).await? {
        return Err(user_in_use());
    }
    Ok(get_username_availability::v3::Response::new(true))
}

async fn check_registration_token_validity(
    services: Arc<Services>,
    client: Anonymous,
    request: check_registration_token_validity::v1::Request,
) -> Result<check_registration_token_validity::v1::Response> {
    services.login_limiter.check(client.origin)?;
    let config = &services.config.registration;
    if config.mode != RegistrationMode::Token {
        return Err(Error::forbidden("Registration tokens are not used on this server"));
    }
    let valid = config.tokens.iter().any(|t| t == &request.token);
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

async fn get_login_types(
    _: Arc<Services>,
    _: Anonymous,
    _: get_login_types::v3::Request,
) -> Result<get_login_types::v3::Response> {
    use get_login_types::v3::{
        ApplicationServiceLoginType, LoginType, PasswordLoginType, TokenLoginType,
    };
    // `get_login_token`: `POST /login/get_token` is served, so a signed-in device can let
    // another one in with `m.login.token`.
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
        LoginType::ApplicationService(ApplicationServiceLoginType::new()),
    ]))
}

async fn login(
    services: Arc<Services>,
    client: Anonymous,
    request: login::v3::Request,
) -> Result<login::v3::Response> {
    if client.appservice.as_ref().is_none_or(|service| service.is_rate_limited()) {
        services.login_limiter.check(client.origin)?;
    }
    let user_id = match &request.login_info {
        login::v3::LoginInfo::Password(password) => password_login(&services, password).await?,
        login::v3::LoginInfo::Token(token) => services.users.take_login_token(&token.token).await?,
        login::v3::LoginInfo::ApplicationService(info) => {
            appservice_login(&services, &client, info).await?
        }
        _ => {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Only password, token and application service login are supported",
            ));
        }
    };
    let device = NewDevice {
        device_id: request.device_id.map(|d| d.to_string()),
        display_name: request.initial_device_display_name,
    };
    let session = services.users.issue_session(&user_id, device, request.refresh_token).await?;
    let mut response =
        login::v3::Response::new(user_id, session.access_token, session.device_id.into());
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response)
}

/// The user an `m.login.application_service` login names: one of the service's users, which
/// must exist (403 `M_FORBIDDEN` otherwise).
async fn appservice_login(
    services: &Services,
    client: &Anonymous,
    info: &login::v3::ApplicationService,
) -> Result<ruma::OwnedUserId> {
    let Some(service) = &client.appservice else {
        return Err(Error::unknown_token(
            "m.login.application_service needs an application service's as_token",
        ));
    };
    #[allow(deprecated)] // `user` is the pre-identifier form
    let name = match (&info.identifier, &info.user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => identifier.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => return Err(Error::forbidden("Only user identifiers are supported")),
    };
    let user_id = services.users.local_user_id(&name)?;
    if !service.is_user_interesting(&user_id) {
        return Err(Error::forbidden("The user is not in the application service's namespaces"));
    }
    let account = services.users.get(&user_id).await?.filter(|account| !account.deactivated);
    if account.is_none() {
        return Err(Error::forbidden("The application service has not registered this user"));
    }
    Ok(user_id)
}

/// The user an `m.login.password` login names, once its password matched.
async fn password_login(
    services: &Services,
    password: &login::v3::Password,
) -> Result<ruma::OwnedUserId> {
    #[allow(deprecated)] // `user` is the pre-identifier form some clients still send
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(identifier)), _) => identifier.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => return Err(Error::forbidden("Only user identifiers are supported")),
    };
    let user_id = services.users.local_user_id(&name)?;
    services.users.check_password(&user_id, &password.password).await?;
    Ok(user_id)
}

/// Served to locked accounts too, as the spec's account locking allows.
async fn logout(
    services: Arc<Services>,
    EvenIfLocked(user): EvenIfLocked,
    _: logout::v3::Request,
) -> Result<logout::v3::Response> {
    services.users.delete_devices(&user.user_id, &[user.device_id.to_string()]).await?;
    Ok(logout::v3::Response::new())
}

/// Served to locked accounts too, as the spec's account locking allows.
async fn logout_all(
    services: Arc<Services>,
    EvenIfLocked(user): EvenIfLocked,
    _: logout_all::v3::Request,
) -> Result<logout_all::v3::Response> {
    services.users.delete_all_devices(&user.user_id, None).await?;
    Ok(logout_all::v3::Response::new())
}

async fn whoami(
    _: Arc<Services>,
    user: User,
    _: whoami::v3::Request,
) -> Result<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(user.user_id, false);
    response.device_id = Some(user.device_id);
    Ok(response)
}

async fn change_password(
    services: Arc<Services>,
    user: User,
    request: change_password::v3::Request,
) -> Result<change_password::v3::Response> {
    super::confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    if request.new_password.is_empty() {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::WeakPassword,
            "The new password is empty",
        ));
    }
    let change = PasswordChange {
        new_password: request.new_password,
        device_id: user.device_id.as_str(),
        logout_devices: request.logout_devices,
    };
    services.users.change_password(&user.user_id, change).await?;
    Ok(change_password::v3::Response::new())
}

async fn deactivate(
    services: Arc<Services>,
    user: User,
    request: deactivate::v3::Request,
) -> Result<deactivate::v3::Response> {
    use ruma::api::client::account::ThirdPartyIdRemovalStatus;
    super::confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    services.rooms.leave_all_rooms(&user.user_id).await?;
    services.users.deactivate(&user.user_id).await?;
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}
