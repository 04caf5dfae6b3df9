//! End-to-end encryption keys: `POST /keys/upload`, `POST /keys/query`, `POST /keys/claim`,
//! `GET /keys/changes`, `POST /keys/device_signing/upload` and `POST /keys/signatures/upload`.

use std::sync::Arc;

use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};

use super::confirm_with_password;
use crate::{
    Result,
    api::router::{Router, User},
    keys::SigningKeys,
    services::Services,
    sync::parse_token,
};

pub fn routes(router: &mut Router) {
    router
        .add(upload_keys)
        .add(get_keys)
        .add(claim_keys)
        .add(get_key_changes)
        .add(upload_signing_keys)
        .add(upload_signatures);
}

async fn upload_keys(
    services: Arc<Services>,
    user: User,
    request: upload_keys::v3::Request,
) -> Result<upload_keys::v3::Response> {
    let counts = services
        .e2ee
        .upload(
            &user.user_id,
            user.device_id.as_str(),
            request.device_keys.as_ref(),
            &request.one_time_keys,
            &request.fallback_keys,
        )
        .await?;
    Ok(upload_keys::v3::Response::new(counts))
}

async fn get_keys(
    services: Arc<Services>,
    user: User,
    request: get_keys::v3::Request,
) -> Result<get_keys::v3::Response> {
    let found = services.e2ee.query(&user.user_id, &request.device_keys).await?;
    let mut response = get_keys::v3::Response::new();
    response.failures = found.failures;
    response.device_keys = found.device_keys;
    response.master_keys = found.master_keys;
    response.self_signing_keys = found.self_signing_keys;
    response.user_signing_keys = found.user_signing_keys;
    Ok(response)
}

async fn claim_keys(
    services: Arc<Services>,
    _user: User,
    request: claim_keys::v3::Request,
) -> Result<claim_keys::v3::Response> {
    let (claimed, failures) = services.e2ee.claim(&request.one_time_keys).await?;
    let mut response = claim_keys::v3::Response::new(claimed);
    response.failures = failures;
    Ok(response)
}

async fn get_key_changes(
    services: Arc<Services>,
    user: User,
    request: get_key_changes::v3::Request,
) -> Result<get_key_changes::v3::Response> {
    let (from, to) = (parse_token(&request.from)?, parse_token(&request.to)?);
    let updates = services.e2ee.device_list_updates(&user.user_id, from, to).await?;
    Ok(get_key_changes::v3::Response::new(updates.changed, updates.left))
}

/// The first upload needs no confirmation, nor does uploading the stored keys again; replacing
/// keys needs the user's password.
async fn upload_signing_keys(
    services: Arc<Services>,
    user: User,
    request: upload_signing_keys::v3::Request,
) -> Result<upload_signing_keys::v3::Response> {
    let upload = SigningKeys {
        master: request.master_key.as_ref(),
        self_signing: request.self_signing_key.as_ref(),
        user_signing: request.user_signing_key.as_ref(),
    };
    let checked = services.e2ee.check_signing_keys(&user.user_id, &upload).await?;
    if checked.replaces {
        confirm_with_password(&services, &user, request.auth.as_ref()).await?;
    }
    services.e2ee.store_signing_keys(&user.user_id, checked).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

async fn upload_signatures(
    services: Arc<Services>,
    user: User,
    request: upload_signatures::v3::Request,
) -> Result<upload_signatures::v3::Response> {
    let failures = services.e2ee.upload_signatures(&user.user_id, &request.signed_keys).await?;
    let mut response = upload_signatures::v3::Response::new();
    response.failures = failures;
    Ok(response)
}
