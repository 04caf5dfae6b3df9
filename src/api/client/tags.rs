//! Room tags: `GET /user/{userId}/rooms/{roomId}/tags` and `PUT`/`DELETE` on `.../tags/{tag}`.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::tag::{create_tag, delete_tag, get_tags},
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(get_tags).add(create_tag).add(delete_tag);
}

fn require_self(user: &User, user_id: &UserId) -> Result<()> {
    if user.user_id != user_id {
        return Err(Error::forbidden("You may only see and change your own tags"));
    }
    Ok(())
}

async fn get_tags(
    services: Arc<Services>,
    user: User,
    request: get_tags::v3::Request,
) -> Result<get_tags::v3::Response> {
    require_self(&user, &request.user_id)?;
    let tags = services.users.tags(&user.user_id, &request.room_id).await?;
    Ok(get_tags::v3::Response::new(tags))
}

async fn create_tag(
    services: Arc<Services>,
    user: User,
    request: create_tag::v3::Request,
) -> Result<create_tag::v3::Response> {
    require_self(&user, &request.user_id)?;
    let users = &services.users;
    users.set_tag(&user.user_id, &request.room_id, &request.tag, request.tag_info).await?;
    Ok(create_tag::v3::Response::new())
}

async fn delete_tag(
    services: Arc<Services>,
    user: User,
    request: delete_tag::v3::Request,
) -> Result<delete_tag::v3::Response> {
    require_self(&user, &request.user_id)?;
    services.users.delete_tag(&user.user_id, &request.room_id, &request.tag).await?;
    Ok(delete_tag::v3::Response::new())
}
