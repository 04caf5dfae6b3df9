//! The user directory: `POST /user_directory/search`.

use std::sync::Arc;

use ruma::api::client::user_directory::search_users::{self, v3::User as FoundUser};

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(search_users);
}

async fn search_users(
    services: Arc<Services>,
    user: User,
    request: search_users::v3::Request,
) -> Result<search_users::v3::Response> {
    let limit = usize::try_from(u64::from(request.limit)).unwrap_or(usize::MAX);
    let found = services.users.search_directory(&user.user_id, &request.search_term, limit).await?;
    let results = found
        .users
        .into_iter()
        .map(|record| {
            let mut found = FoundUser::new(record.user_id);
            found.display_name = record.displayname;
            found.avatar_url = record.avatar_url.map(Into::into);
            found
        })
        .collect();
    Ok(search_users::v3::Response::new(results, found.limited))
}
