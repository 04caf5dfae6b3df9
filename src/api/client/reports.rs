//! Reporting content: `POST /rooms/{roomId}/report/{eventId}`, `POST /rooms/{roomId}/report` and
//! `POST /users/{userId}/report`.

use std::sync::Arc;

use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(report_content).add(report_room).add(report_user);
}

async fn report_content(
    services: Arc<Services>,
    user: User,
    request: report_content::v3::Request,
) -> Result<report_content::v3::Response> {
    let (room_id, event_id) = (&request.room_id, &request.event_id);
    services.rooms.report_event(&user.user_id, room_id, event_id, request.reason).await?;
    Ok(report_content::v3::Response::new())
}

async fn report_room(
    services: Arc<Services>,
    user: User,
    request: report_room::v3::Request,
) -> Result<report_room::v3::Response> {
    services.rooms.report_room(&user.user_id, &request.room_id, request.reason).await?;
    Ok(report_room::v3::Response::new())
}

async fn report_user(
    services: Arc<Services>,
    user: User,
    request: report_user::v3::Request,
) -> Result<report_user::v3::Response> {
    services.rooms.report_user(&user.user_id, &request.user_id, request.reason).await?;
    Ok(report_user::v3::Response::new())
}
