//! The client-server API's handlers, one file per area. Each handler is named after its ruma
//! endpoint module, parses with ruma, authorizes, calls one operation and builds the response.

mod account;
mod account_data;
mod admin;
mod appservice;
mod backup;
mod dehydrated_device;
mod devices;
mod directory;
mod discovery;
mod events;
mod hierarchy;
mod keys;
mod knock;
mod media;
mod mutual_rooms;
mod peeking;
mod presence;
mod profile;
mod push;
mod receipts;
mod relations;
mod reports;
mod rooms;
mod search;
mod sliding_sync;
mod sync;
mod tags;
mod thirdparty;
mod threepids;
mod timestamp;
mod to_device;
mod tokens;
mod typing;
mod upgrade;
mod user_directory;
mod voip;

use ruma::api::client::uiaa::{AuthData, AuthType};

use super::router::{Router, User};
use crate::{Result, services::Services, users::uiaa::UiaaContext};

/// Registers every client-server endpoint Hearth serves.
pub fn register(router: &mut Router) {
    account::routes(router);
    account_data::routes(router);
    admin::routes(router);
    appservice::routes(router);
    backup::routes(router);
    dehydrated_device::routes(router);
    devices::routes(router);
    directory::routes(router);
    discovery::routes(router);
    events::routes(router);
    peeking::routes(router);
    hierarchy::routes(router);
    knock::routes(router);
    media::routes(router);
    keys::routes(router);
    mutual_rooms::routes(router);
    presence::routes(router);
    profile::routes(router);
    push::routes(router);
    receipts::routes(router);
    relations::routes(router);
    reports::routes(router);
    rooms::routes(router);
    sliding_sync::routes(router);
    search::routes(router);
    sync::routes(router);
    tags::routes(router);
    thirdparty::routes(router);
    threepids::routes(router);
    timestamp::routes(router);
    to_device::routes(router);
    tokens::routes(router);
    typing::routes(router);
    upgrade::routes(router);
    user_directory::routes(router);
    voip::routes(router);
}

/// Asks the user to confirm with their password (user-interactive authentication) before an
/// operation on their account. Each password tried counts against the account's limit.
async fn confirm_with_password(
    services: &Services,
    user: &User,
    auth: Option<&AuthData>,
) -> Result<()> {
    if let Some(AuthData::Password(_)) = auth
        && user.is_rate_limited()
    {
        services.password_limiter.check(user.user_id.clone())?;
    }
    let context =
        UiaaContext { user_id: Some(&user.user_id), registration_tokens: &[], threepids: None };
    services.uiaa.check(&services.users, &[vec![AuthType::Password]], auth, context).await
}
