//! Accounts and sessions: registration (with an e-mail address when `[email]` is configured),
//! login (with a password, by user name or e-mail address, or with a login token), logout,
//! whoami, password change and reset by e-mail, and deactivation. Third-party identifiers are in
//! `threepids.rs`; refreshing and the other tokens are in `tokens.rs`.

use std::sync::Arc;

use crate::users::{NewDevice, PasswordChange};
use ruma::api::client::{
    account::{
        change_password, check_registration_token_validity, deactivate, get_username_availability,
        register::{self, RegistrationKind},
        whoami,
    },
    session::{get_login_types, login, logout, logout_all},
    uiaa::{AuthType, UserIdentifier},
};

use crate::{
    Error, Result,
    api::router::{APPSERVICE_DEVICE, Anonymous, EvenIfLocked, Router, User},
    config::{EmailRegistration, RegistrationMode},
    services::Services,
    threepids::{EMAIL, Validated},
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
        .add(deactivate);
}

/// The UIA flows of registration in the configured mode, with e-mail as `[email] registration`
/// asks (and mail is configured).
fn registration_flows(mode: RegistrationMode, email: EmailRegistration) -> Vec<Vec<AuthType>> {
    let first = match mode {
        RegistrationMode::Open => AuthType::Dummy,
        RegistrationMode::Token => AuthType::RegistrationToken,
        RegistrationMode::Closed => return Vec::new(),
    };
    let with_email = match mode {
        RegistrationMode::Token => vec![first.clone(), AuthType::EmailIdentity],
        _ => vec![AuthType::EmailIdentity],
    };
    match email {
        EmailRegistration::Off => vec![vec![first]],
        EmailRegistration::Optional => vec![vec![first], with_email],
        EmailRegistration::Required => vec![with_email],
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
    let threepids = Some(&services.threepids);
    let context = UiaaContext { user_id: None, registration_tokens: &config.tokens, threepids };
    let flows = registration_flows(config.mode, services.threepids.email_at_registration());
    let auth = request.auth.as_ref();
    let validated =
        services.uiaa.check_with_threepid(&services.users, &flows, auth, context).await?;
    if let Some(validated) = &validated
        && services.threepids.user_of(&validated.medium, &validated.address).await?.is_some()
    {
        return Err(crate::threepids::threepid_in_use());
    }

    let user_id = match user_id {
        Some(user_id) => {
            services.users.create(&user_id, password, false).await?;
            user_id
        }
        None => services.users.create_random(password).await?,
    };
    if let Some(validated) = validated {
        services.threepids.add(&user_id, validated).await?;
    }
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

/// The user an `m.login.password` login names (by user name or by an e-mail address on the
/// account), once its password matched.
async fn password_login(
    services: &Services,
    password: &login::v3::Password,
) -> Result<ruma::OwnedUserId> {
    // `user`, `medium` and `address` are the pre-identifier forms some clients still send.
    #[allow(deprecated)]
    let (user, medium, address) = (&password.user, &password.medium, &password.address);
    let user_id = match (&password.identifier, user, medium.as_deref(), address) {
        (Some(UserIdentifier::Matrix(identifier)), ..) => {
            services.users.local_user_id(&identifier.user)?
        }
        (Some(UserIdentifier::Email(identifier)), ..) => {
            user_of_email(services, &identifier.address).await?
        }
        (None, Some(user), ..) => services.users.local_user_id(user)?,
        (None, None, Some(EMAIL), Some(address)) => user_of_email(services, address).await?,
        _ => return Err(Error::forbidden("Only user names and e-mail addresses can log in")),
    };
    services.users.check_password(&user_id, &password.password).await?;
    Ok(user_id)
}

/// The account with this e-mail address; an unknown address is refused as a wrong password is,
/// so that a login attempt does not tell which addresses have accounts.
async fn user_of_email(services: &Services, address: &str) -> Result<ruma::OwnedUserId> {
    let user_id = services.threepids.user_of(EMAIL, address).await?;
    user_id.ok_or_else(|| Error::forbidden("Invalid user name or password"))
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
    // A bridge acting as a user without naming a device acts on none: the field is left out.
    let no_device = user.appservice.is_some() && user.device_id == APPSERVICE_DEVICE;
    response.device_id = (!no_device).then_some(user.device_id);
    Ok(response)
}

/// With an access token, confirmed with the password; without one, a password reset confirmed
/// with `m.login.email.identity` (a session validated by mail for an address on the account).
async fn change_password(
    services: Arc<Services>,
    user: Option<User>,
    request: change_password::v3::Request,
) -> Result<change_password::v3::Response> {
    let (user_id, device_id) = match &user {
        Some(user) => {
            super::confirm_with_password(&services, user, request.auth.as_ref()).await?;
            (user.user_id.clone(), Some(user.device_id.as_str()))
        }
        None => (reset_password_user(&services, &request).await?, None),
    };
    if request.new_password.is_empty() {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::WeakPassword,
            "The new password is empty",
        ));
    }
    let change = PasswordChange {
        new_password: request.new_password,
        device_id,
        logout_devices: request.logout_devices,
    };
    services.users.change_password(&user_id, change).await?;
    Ok(change_password::v3::Response::new())
}

/// The account whose password a reset by e-mail changes, once the UIA stage
/// `m.login.email.identity` is complete; the session is used up.
async fn reset_password_user(
    services: &Services,
    request: &change_password::v3::Request,
) -> Result<ruma::OwnedUserId> {
    if !services.threepids.email_enabled() {
        return Err(Error::missing_token());
    }
    let flows = [vec![AuthType::EmailIdentity]];
    let threepids = Some(&services.threepids);
    let context = UiaaContext { user_id: None, registration_tokens: &[], threepids };
    let auth = request.auth.as_ref();
    let validated =
        services.uiaa.check_with_threepid(&services.users, &flows, auth, context).await?;
    let Some(validated): Option<Validated> = validated else {
        return Err(Error::forbidden("No e-mail address was validated"));
    };
    let user_id = services.threepids.user_of(&validated.medium, &validated.address).await?;
    let user_id = user_id.ok_or_else(|| Error::forbidden("No account has this e-mail address"))?;
    services.threepids.use_up(&validated).await?;
    Ok(user_id)
}

async fn deactivate(
    services: Arc<Services>,
    user: User,
    request: deactivate::v3::Request,
) -> Result<deactivate::v3::Response> {
    use ruma::api::client::account::ThirdPartyIdRemovalStatus;
    super::confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    services.rooms.leave_all_rooms(&user.user_id).await?;
    // The account's e-mail addresses go with it (in the store); bound ones are unbound first.
    let id_server = request.id_server.as_deref();
    let unbound = services.threepids.unbind_all(&user.user_id, id_server).await?;
    services.users.deactivate(&user.user_id).await?;
    let status = match unbound {
        true => ThirdPartyIdRemovalStatus::Success,
        false => ThirdPartyIdRemovalStatus::NoSupport,
    };
    Ok(deactivate::v3::Response::new(status))
}
