//! Profiles: display name and avatar URL (the fields Hearth stores).

use std::sync::Arc;

use ruma::{
    api::client::profile::{get_profile, get_profile_field, set_profile_field},
    profile::{ProfileFieldName, ProfileFieldValue},
};

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    rooms::ProfileChange,
    services::Services,
    store::UserRecord,
};

pub fn routes(router: &mut Router) {
    router.add(get_profile).add(get_profile_field).add(set_profile_field);
}

async fn profile_of(services: &Services, user_id: &ruma::UserId) -> Result<UserRecord> {
    match services.users.get(user_id).await? {
        Some(user) if !user.deactivated => Ok(user),
        _ => Err(Error::not_found("Profile not found")),
    }
}

fn field_value(user: &UserRecord, field: &ProfileFieldName) -> Option<ProfileFieldValue> {
    match field {
        ProfileFieldName::DisplayName => {
            user.displayname.clone().map(ProfileFieldValue::DisplayName)
        }
        ProfileFieldName::AvatarUrl => {
            user.avatar_url.clone().map(|url| ProfileFieldValue::AvatarUrl(url.into()))
        }
        _ => None,
    }
}

async fn get_profile(
    services: Arc<Services>,
    _: Anonymous,
    request: get_profile::v3::Request,
) -> Result<get_profile::v3::Response> {
    let user = profile_of(&services, &request.user_id).await?;
    let fields = [ProfileFieldName::DisplayName, ProfileFieldName::AvatarUrl];
    let values = fields.iter().filter_map(|field| field_value(&user, field));
    Ok(values.collect())
}

async fn get_profile_field(
    services: Arc<Services>,
    _: Anonymous,
    request: get_profile_field::v3::Request,
) -> Result<get_profile_field::v3::Response> {
    let user = profile_of(&services, &request.user_id).await?;
    let value = field_value(&user, &request.field)
        .ok_or_else(|| Error::not_found("This profile field is not set"))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn set_profile_field(
    services: Arc<Services>,
    user: User,
    request: set_profile_field::v3::Request,
) -> Result<set_profile_field::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("You may only change your own profile"));
    }
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
        _ => return Err(Error::invalid_param("Hearth stores only displayname and avatar_url")),
    };
    services.rooms.update_profile(&user.user_id, change).await?;
    Ok(set_profile_field::v3::Response::new())
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}
