//! Room aliases, a room's listing in the directory, and `/publicRooms`.

use std::sync::Arc;

use ruma::{
    UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
    },
    directory::RoomNetwork,
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::directory::PublicRoomsPage,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(create_alias)
        .add(get_alias)
        .add(delete_alias)
        .add(aliases)
        .add(get_room_visibility)
        .add(set_room_visibility)
        .add(get_public_rooms)
        .add(get_public_rooms_filtered);
}

/// Rooms per `/publicRooms` page when the client does not say.
const DEFAULT_PUBLIC_ROOMS_LIMIT: usize = 100;

async fn create_alias(
    services: Arc<Services>,
    user: User,
    request: create_alias::v3::Request,
) -> Result<create_alias::v3::Response> {
    user.require_not_suspended()?;
    let alias = &request.room_alias;
    let acting = user.appservice.as_ref();
    services.appservices.require_alias_not_claimed(alias, acting.map(|service| service.id()))?;
    // A bridge makes the aliases of its namespace point where it likes, joined or not.
    let bridged = acting.is_some_and(|service| service.is_alias_interesting(alias));
    services.rooms.create_alias(&user.user_id, alias, &request.room_id, !bridged).await?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias(
    services: Arc<Services>,
    _: Option<User>,
    request: get_alias::v3::Request,
) -> Result<get_alias::v3::Response> {
    let room_id = services.resolve_alias(&request.room_alias).await?;
    let servers = vec![services.rooms.server_name().to_owned()];
    Ok(get_alias::v3::Response::new(room_id, servers))
}

async fn delete_alias(
    services: Arc<Services>,
    user: User,
    request: delete_alias::v3::Request,
) -> Result<delete_alias::v3::Response> {
    user.require_not_suspended()?;
    let is_admin = services.users.is_admin(&user.user_id).await?;
    services.rooms.delete_alias(&user.user_id, is_admin, &request.room_alias).await?;
    Ok(delete_alias::v3::Response::new())
}

async fn aliases(
    services: Arc<Services>,
    user: User,
    request: aliases::v3::Request,
) -> Result<aliases::v3::Response> {
    let aliases = services.rooms.room_aliases(&user.user_id, &request.room_id).await?;
    Ok(aliases::v3::Response::new(aliases))
}

async fn get_room_visibility(
    services: Arc<Services>,
    _: Option<User>,
    request: get_room_visibility::v3::Request,
) -> Result<get_room_visibility::v3::Response> {
    let published = services.rooms.is_published(&request.room_id).await?;
    let visibility = if published { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

async fn set_room_visibility(
    services: Arc<Services>,
    user: User,
    request: set_room_visibility::v3::Request,
) -> Result<set_room_visibility::v3::Response> {
    user.require_not_suspended()?;
    let published = match request.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be \"public\" or \"private\"")),
    };
    let is_admin = services.users.is_admin(&user.user_id).await?;
    services.rooms.set_published(&user.user_id, is_admin, &request.room_id, published).await?;
    Ok(set_room_visibility::v3::Response::new())
}

async fn get_public_rooms(
    services: Arc<Services>,
    _: Option<User>,
    request: get_public_rooms::v3::Request,
) -> Result<get_public_rooms::v3::Response> {
    require_this_server(&services, request.server.as_deref())?;
    let page = public_rooms_page(
        &services,
        &RoomNetwork::Matrix,
        None,
        request.since.as_deref(),
        request.limit,
    )
    .await?;
    let (chunk, next_batch, prev_batch, total) = page_parts(page);
    let mut response = get_public_rooms::v3::Response::new(chunk);
    (response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        (next_batch, prev_batch, total);
    Ok(response)
}

async fn get_public_rooms_filtered(
    services: Arc<Services>,
    _: User,
    request: get_public_rooms_filtered::v3::Request,
) -> Result<get_public_rooms_filtered::v3::Response> {
    require_this_server(&services, request.server.as_deref())?;
    let search = request.filter.generic_search_term.as_deref();
    let since = request.since.as_deref();
    let page =
        public_rooms_page(&services, &request.room_network, search, since, request.limit).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    (
        response.chunk,
        response.next_batch,
        response.prev_batch,
        response.total_room_count_estimate,
    ) = page_parts(page);
    Ok(response)
}

/// Another server's directory would be fetched over federation, which is not served yet.
fn require_this_server(services: &Services, server: Option<&ruma::ServerName>) -> Result<()> {
    match server {
        Some(server) if server != services.rooms.server_name() => Err(Error::client(
            http::StatusCode::NOT_FOUND,
            ruma::api::error::ErrorKind::Unrecognized,
            "Listing another server's public rooms is not supported yet",
        )),
        _ => Ok(()),
    }
}

async fn public_rooms_page(
    services: &Services,
    network: &RoomNetwork,
    search: Option<&str>,
    since: Option<&str>,
    limit: Option<UInt>,
) -> Result<PublicRoomsPage> {
    let offset = since.map(parse_directory_token).transpose()?.unwrap_or(0);
    let limit = limit.map_or(DEFAULT_PUBLIC_ROOMS_LIMIT, |l| {
        usize::try_from(u64::from(l)).unwrap_or(usize::MAX)
    });
    let limit = limit.clamp(1, crate::sync::MAX_LIMIT);
    services.rooms.public_rooms(network, search, offset, limit).await
}

type PageParts =
    (Vec<ruma::directory::PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>);

fn page_parts(page: PublicRoomsPage) -> PageParts {
    let token = |offset: usize| format!("d{offset}");
    let total = UInt::try_from(page.total).ok();
    (page.chunk, page.next.map(token), page.prev.map(token), total)
}

/// Parses a `/publicRooms` pagination token (`d` and an offset).
fn parse_directory_token(token: &str) -> Result<usize> {
    token
        .strip_prefix('d')
        .and_then(|offset| offset.parse().ok())
        .ok_or_else(|| Error::invalid_param("Invalid pagination token"))
}
