//! `/sync` and the stored filters it (and `/messages`) can name.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::{
        filter::{FilterDefinition, create_filter, get_filter},
        sync::sync_events::{self, v3::Filter},
    },
    presence::PresenceState::{Offline, Online, Unavailable},
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
    sync::{SyncFilter, SyncRequest, parse_sync_token},
};

pub fn routes(router: &mut Router) {
    router.add(sync_events).add(create_filter).add(get_filter);
}

async fn sync_events(
    services: Arc<Services>,
    user: User,
    request: sync_events::v3::Request,
) -> Result<sync_events::v3::Response> {
    let definition = match request.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(definition)) => definition,
        Some(Filter::FilterId(filter_id)) => stored_filter(&services, &user, &filter_id).await?,
        Some(_) => return Err(Error::invalid_param("Unsupported filter parameter")),
    };
    let since = request.since.as_deref().map(parse_sync_token).transpose()?;
    if !matches!(request.set_presence, Online | Unavailable | Offline) {
        return Err(Error::invalid_param("set_presence must be online, unavailable or offline"));
    }
    let sync_request = SyncRequest {
        user_id: user.user_id,
        device_id: user.device_id.to_string(),
        since: since.map(|token| token.position),
        since_typing: since.and_then(|token| token.typing),
        since_to_device: since.map(|token| token.to_device.unwrap_or(token.position)),
        since_presence: since.and_then(|token| token.presence),
        set_presence: request.set_presence,
        full_state: request.full_state,
        timeout: request.timeout.unwrap_or(Duration::ZERO),
        filter: SyncFilter::from_ruma(&definition),
    };
    crate::sync::sync(&services, sync_request).await
}

/// A filter the user stored earlier, by the ID `/user/{userId}/filter` returned.
async fn stored_filter(
    services: &Services,
    user: &User,
    filter_id: &str,
) -> Result<FilterDefinition> {
    // ruma reads a `filter` that is not a valid filter definition as a filter ID.
    let unknown = || {
        if filter_id.starts_with('{') {
            Error::invalid_param("The filter is not a valid filter definition")
        } else {
            Error::invalid_param(format!("No filter with ID {filter_id:?}"))
        }
    };
    let id = filter_id.parse::<i64>().map_err(|_| unknown())?;
    let json = services.users.filter(&user.user_id, id).await?.ok_or_else(unknown)?;
    serde_json::from_str(&json)
        .map_err(|e| anyhow::anyhow!("stored filter does not parse: {e}").into())
}

async fn create_filter(
    services: Arc<Services>,
    user: User,
    request: create_filter::v3::Request,
) -> Result<create_filter::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("You may only create filters for yourself"));
    }
    let json = serde_json::to_string(&request.filter).map_err(anyhow::Error::from)?;
    let filter_id = services.users.create_filter(&user.user_id, &json).await?;
    Ok(create_filter::v3::Response::new(filter_id.to_string()))
}

async fn get_filter(
    services: Arc<Services>,
    user: User,
    request: get_filter::v3::Request,
) -> Result<get_filter::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("You may only read your own filters"));
    }
    let not_found = || Error::not_found("No such filter");
    let id = request.filter_id.parse::<i64>().map_err(|_| not_found())?;
    let json = services.users.filter(&user.user_id, id).await?.ok_or_else(not_found)?;
    let definition = serde_json::from_str(&json).map_err(anyhow::Error::from)?;
    Ok(get_filter::v3::Response::new(definition))
}
