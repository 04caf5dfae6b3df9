//! Account data: per-user JSON objects, global or per room, that clients sync between devices.

use std::sync::Arc;

use ruma::{
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data,
        set_room_account_data,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_global_account_data)
        .add(set_global_account_data)
        .add(get_room_account_data)
        .add(set_room_account_data);
}

/// Types the server manages itself, which clients may not set through this API.
const SERVER_MANAGED_TYPES: [&str; 2] = ["m.fully_read", "m.push_rules"];

fn require_self(user: &User, user_id: &ruma::UserId) -> Result<()> {
    if user.user_id != user_id {
        return Err(Error::forbidden("You may only access your own account data"));
    }
    Ok(())
}

/// Checks a new entry: a type the client may set, and a JSON object as content.
fn checked_content<'a>(data_type: &str, content: &'a RawValue) -> Result<&'a RawValue> {
    if SERVER_MANAGED_TYPES.contains(&data_type) {
        return Err(Error::client(
            http::StatusCode::METHOD_NOT_ALLOWED,
            ruma::api::error::ErrorKind::BadJson,
            format!("{data_type} is managed by the server and cannot be set here"),
        ));
    }
    if !content.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("Account data must be a JSON object"));
    }
    crate::users::ignored::check_account_data(data_type, content)?;
    Ok(content)
}

async fn get_global_account_data(
    services: Arc<Services>,
    user: User,
    request: get_global_account_data::v3::Request,
) -> Result<get_global_account_data::v3::Response> {
    require_self(&user, &request.user_id)?;
    let data_type = request.event_type.to_string();
    let content = services.users.account_data(&user.user_id, None, &data_type).await?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(content)))
}

async fn set_global_account_data(
    services: Arc<Services>,
    user: User,
    request: set_global_account_data::v3::Request,
) -> Result<set_global_account_data::v3::Response> {
    require_self(&user, &request.user_id)?;
    let data_type = request.event_type.to_string();
    let content = checked_content(&data_type, request.data.json())?;
    services.users.set_account_data(&user.user_id, None, &data_type, content).await?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_room_account_data(
    services: Arc<Services>,
    user: User,
    request: get_room_account_data::v3::Request,
) -> Result<get_room_account_data::v3::Response> {
    require_self(&user, &request.user_id)?;
    let data_type = request.event_type.to_string();
    let content =
        services.users.account_data(&user.user_id, Some(&request.room_id), &data_type).await?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(content)))
}

async fn set_room_account_data(
    services: Arc<Services>,
    user: User,
    request: set_room_account_data::v3::Request,
) -> Result<set_room_account_data::v3::Response> {
    require_self(&user, &request.user_id)?;
    let data_type = request.event_type.to_string();
    let content = checked_content(&data_type, request.data.json())?;
    services
        .users
        .set_account_data(&user.user_id, Some(&request.room_id), &data_type, content)
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}
