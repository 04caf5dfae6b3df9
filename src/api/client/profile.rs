//! Profiles: the display name and avatar URL (repeated in the user's membership events) and the
//! extended profile fields of spec v1.16 (`m.tz` and custom namespaced fields, kept by
//! `crate::users::profile`), read, set and deleted alike through `/profile/{userId}/{keyName}`.

use std::sync::Arc;

use ruma::{
    api::client::profile::{
        delete_profile_field, get_profile, get_profile_field, set_profile_field,
    },
    profile::{ProfileFieldName, ProfileFieldValue},
};
use serde_json::Value as JsonValue;

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    rooms::ProfileChange,
    services::Services,
    store::UserRecord,
    users::profile::check_field_name,
};

pub fn routes(router: &mut Router) {
    router.add(get_profile).add(get_profile_field).add(set_profile_field).add(delete_profile_field);
}

async fn profile_of(services: &Services, user_id: &ruma::UserId) -> Result<UserRecord> {
    match services.users.get(user_id).await? {
        Some(user) if !user.deactivated => Ok(user),
        _ => Err(Error::not_found("Profile not found")),
    }
}

/// The display name and avatar URL that are set, as (name, value) pairs.
fn basic_fields(user: &UserRecord) -> Vec<(String, JsonValue)> {
    let displayname = user.displayname.clone().map(|name| ("displayname", name));
    let avatar_url = user.avatar_url.clone().map(|url| ("avatar_url", url));
    [displayname, avatar_url]
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.to_owned(), JsonValue::String(value)))
        .collect()
}

async fn get_profile(
    services: Arc<Services>,
    _: Anonymous,
    request: get_profile::v3::Request,
) -> Result<get_profile::v3::Response> {
    let user = profile_of(&services, &request.user_id).await?;
    let custom = services.users.custom_profile_fields(&user.user_id).await?;
    Ok(basic_fields(&user).into_iter().chain(custom).collect())
}

async fn get_profile_field(
    services: Arc<Services>,
    _: Anonymous,
    request: get_profile_field::v3::Request,
) -> Result<get_profile_field::v3::Response> {
    let user = profile_of(&services, &request.user_id).await?;
    let name = request.field.as_str();
    let fields = match &request.field {
        ProfileFieldName::DisplayName | ProfileFieldName::AvatarUrl => basic_fields(&user),
        _ => services.users.custom_profile_fields(&user.user_id).await?,
    };
    let value = fields.into_iter().find(|(field, _)| field == name);
    let (_, value) = value.ok_or_else(|| Error::not_found("This profile field is not set"))?;
    let value = ProfileFieldValue::new(name, value)
        .map_err(|e| anyhow::anyhow!("stored profile field {name} has the wrong type: {e}"))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn set_profile_field(
    services: Arc<Services>,
    user: User,
    request: set_profile_field::v3::Request,
) -> Result<set_profile_field::v3::Response> {
    require_own_profile(&user, &request.user_id)?;
    let field = request.value.field_name();
    check_field_name(field.as_str())?;
    user.require_not_suspended()?;
    // Bounded so the profile always fits in the membership events that repeat it.
    let change = match request.value {
        ProfileFieldValue::DisplayName(name) if name.len() > 256 => {
            return Err(Error::invalid_param("The display name is longer than 256 bytes"));
        }
        ProfileFieldValue::AvatarUrl(url) if url.as_str().len() > 1000 => {
            return Err(Error::invalid_param("The avatar URL is longer than 1000 bytes"));
        }
        ProfileFieldValue::DisplayName(name) if name.contains('\0') => {
            return Err(Error::invalid_param("The display name contains a NUL character"));
        }
        ProfileFieldValue::AvatarUrl(url) if url.as_str().contains('\0') => {
            return Err(Error::invalid_param("The avatar URL contains a NUL character"));
        }
        ProfileFieldValue::DisplayName(name) => ProfileChange::DisplayName(non_empty(name)),
        ProfileFieldValue::AvatarUrl(url) => ProfileChange::AvatarUrl(non_empty(url.to_string())),
        other => {
            let value = other.value().into_owned();
            services.users.set_custom_profile_field(&user.user_id, field.as_str(), value).await?;
            return Ok(set_profile_field::v3::Response::new());
        }
    };
    services.rooms.update_profile(&user.user_id, change).await?;
    Ok(set_profile_field::v3::Response::new())
}

/// Deleting the display name or avatar URL updates the membership events of the user's joined
/// rooms, as setting them does; deleting a field that is not set succeeds, as the spec says.
async fn delete_profile_field(
    services: Arc<Services>,
    user: User,
    request: delete_profile_field::v3::Request,
) -> Result<delete_profile_field::v3::Response> {
    require_own_profile(&user, &request.user_id)?;
    check_field_name(request.field.as_str())?;
    user.require_not_suspended()?;
    let change = match request.field {
        ProfileFieldName::DisplayName => ProfileChange::DisplayName(None),
        ProfileFieldName::AvatarUrl => ProfileChange::AvatarUrl(None),
        field => {
            services.users.delete_custom_profile_field(&user.user_id, field.as_str()).await?;
            return Ok(delete_profile_field::v3::Response::new());
        }
    };
    // A field that is not set has no membership events to update.
    let current = profile_of(&services, &user.user_id).await?;
    let is_set = match change {
        ProfileChange::DisplayName(_) => current.displayname.is_some(),
        ProfileChange::AvatarUrl(_) => current.avatar_url.is_some(),
    };
    if is_set {
        services.rooms.update_profile(&user.user_id, change).await?;
    }
    Ok(delete_profile_field::v3::Response::new())
}

fn require_own_profile(user: &User, owner: &ruma::UserId) -> Result<()> {
    if owner != user.user_id {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(())
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}
