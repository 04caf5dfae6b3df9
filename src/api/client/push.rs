//! Push rules, pushers and notifications: `/pushrules/...`, `GET /pushers`,
//! `POST /pushers/set` and `GET /notifications`.

use std::sync::Arc;

use ruma::api::client::push::{
    delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
    get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule,
    set_pushrule_actions, set_pushrule_enabled,
};

use crate::{
    Result,
    api::router::{Router, User},
    push::{NotificationsPage, rules},
    rooms::format::Viewer,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_pushrules_all)
        .add(get_pushrules_global_scope)
        .add(get_pushrule)
        .add(set_pushrule)
        .add(delete_pushrule)
        .add(get_pushrule_enabled)
        .add(set_pushrule_enabled)
        .add(get_pushrule_actions)
        .add(set_pushrule_actions)
        .add(get_pushers)
        .add(set_pusher)
        .add(get_notifications);
}

async fn get_pushrules_all(
    services: Arc<Services>,
    user: User,
    _: get_pushrules_all::v3::Request,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(services.push.rules(&user.user_id).await?))
}

async fn get_pushrules_global_scope(
    services: Arc<Services>,
    user: User,
    _: get_pushrules_global_scope::v3::Request,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(services.push.rules(&user.user_id).await?))
}

async fn get_pushrule(
    services: Arc<Services>,
    user: User,
    request: get_pushrule::v3::Request,
) -> Result<get_pushrule::v3::Response> {
    let ruleset = services.push.rules(&user.user_id).await?;
    let rule = rules::get(&ruleset, &request.kind, &request.rule_id)?;
    Ok(get_pushrule::v3::Response::new(rule))
}

async fn set_pushrule(
    services: Arc<Services>,
    user: User,
    request: set_pushrule::v3::Request,
) -> Result<set_pushrule::v3::Response> {
    let (before, after) = (request.before.as_deref(), request.after.as_deref());
    let rule = request.rule;
    services
        .push
        .change_rules(&user.user_id, |ruleset| rules::insert(ruleset, rule, before, after))
        .await?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_pushrule(
    services: Arc<Services>,
    user: User,
    request: delete_pushrule::v3::Request,
) -> Result<delete_pushrule::v3::Response> {
    let (kind, rule_id) = (&request.kind, &request.rule_id);
    services
        .push
        .change_rules(&user.user_id, |ruleset| rules::remove(ruleset, kind, rule_id))
        .await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn get_pushrule_enabled(
    services: Arc<Services>,
    user: User,
    request: get_pushrule_enabled::v3::Request,
) -> Result<get_pushrule_enabled::v3::Response> {
    let ruleset = services.push.rules(&user.user_id).await?;
    let enabled = rules::enabled(&ruleset, &request.kind, &request.rule_id)?;
    Ok(get_pushrule_enabled::v3::Response::new(enabled))
}

async fn set_pushrule_enabled(
    services: Arc<Services>,
    user: User,
    request: set_pushrule_enabled::v3::Request,
) -> Result<set_pushrule_enabled::v3::Response> {
    let (kind, rule_id, enabled) = (&request.kind, &request.rule_id, request.enabled);
    services
        .push
        .change_rules(&user.user_id, |ruleset| rules::set_enabled(ruleset, kind, rule_id, enabled))
        .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_pushrule_actions(
    services: Arc<Services>,
    user: User,
    request: get_pushrule_actions::v3::Request,
) -> Result<get_pushrule_actions::v3::Response> {
    let ruleset = services.push.rules(&user.user_id).await?;
    let actions = rules::actions(&ruleset, &request.kind, &request.rule_id)?;
    Ok(get_pushrule_actions::v3::Response::new(actions))
}

async fn set_pushrule_actions(
    services: Arc<Services>,
    user: User,
    request: set_pushrule_actions::v3::Request,
) -> Result<set_pushrule_actions::v3::Response> {
    let (kind, rule_id, actions) = (&request.kind, &request.rule_id, request.actions);
    services
        .push
        .change_rules(&user.user_id, |ruleset| rules::set_actions(ruleset, kind, rule_id, actions))
        .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

async fn get_pushers(
    services: Arc<Services>,
    user: User,
    _: get_pushers::v3::Request,
) -> Result<get_pushers::v3::Response> {
    Ok(get_pushers::v3::Response::new(services.push.pushers(&user.user_id).await?))
}

async fn set_pusher(
    services: Arc<Services>,
    user: User,
    request: set_pusher::v3::Request,
) -> Result<set_pusher::v3::Response> {
    services.push.set_pusher(&user.user_id, user.device_id.as_str(), request.action).await?;
    Ok(set_pusher::v3::Response::new())
}

async fn get_notifications(
    services: Arc<Services>,
    user: User,
    request: get_notifications::v3::Request,
) -> Result<get_notifications::v3::Response> {
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let page = NotificationsPage {
        from: request.from.as_deref(),
        limit: request.limit,
        only: request.only.as_deref(),
    };
    let (notifications, next_token) = services.push.notifications(viewer, page).await?;
    let mut response = get_notifications::v3::Response::new(notifications);
    response.next_token = next_token;
    Ok(response)
}
