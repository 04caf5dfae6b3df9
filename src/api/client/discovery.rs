//! Discovery: `/versions`, `/capabilities`, `/.well-known/matrix/*` (client, server and support).

use std::sync::Arc;

use ruma::api::client::discovery::{
    discover_homeserver, discover_support, get_capabilities, get_supported_versions,
};

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_supported_versions)
        .add(get_capabilities)
        .add(discover_homeserver)
        .add(discover_federation_server)
        .add(discover_support);
}

/// The spec versions Hearth advertises. Clients refuse a server that advertises nothing newer
/// than r0, so v1.1 and v1.2 are named although parts of them (end-to-end encryption keys,
/// spaces) are not served yet; the README lists those parts. Versions whose main additions are
/// not served (v1.3 relations, v1.4 threads) are left out, so that clients do not go looking for
/// them.
const VERSIONS: [&str; 2] = ["v1.1", "v1.2"];

/// Features of later versions that are served, under the names clients look for without the
/// version that brought them: authenticated media (v1.11, MSC3916); and unstable features:
/// simplified sliding sync (MSC4186).
const UNSTABLE_FEATURES: [&str; 2] = ["org.matrix.msc3916.stable", "org.matrix.simplified_msc3575"];

async fn get_supported_versions(
    _: Arc<Services>,
    _: Option<User>,
    _: get_supported_versions::Request,
) -> Result<get_supported_versions::Response> {
    let versions = VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    let mut response = get_supported_versions::Response::new(versions);
    response.unstable_features =
        UNSTABLE_FEATURES.iter().map(|feature| ((*feature).to_owned(), true)).collect();
    Ok(response)
}

async fn get_capabilities(
    services: Arc<Services>,
    user: User,
    _: get_capabilities::v3::Request,
) -> Result<get_capabilities::v3::Response> {
    use ruma::api::client::discovery::get_capabilities::v3::{
        AccountModerationCapability, Capabilities, GetLoginTokenCapability,
        ProfileFieldsCapability, RoomVersionStability, RoomVersionsCapability,
        ThirdPartyIdChangesCapability,
    };
    let available = crate::rooms::create::CREATABLE_VERSIONS
        .iter()
        .filter_map(|v| ruma::RoomVersionId::try_from(*v).ok())
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    let default = crate::rooms::create::DEFAULT_VERSION
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad default room version"))?;
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(default, available);
    // E-mail addresses can be added and removed when the server sends mail; phone numbers never.
    let email = services.threepids.email_enabled();
    capabilities.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(email);
    // Every field of the profile may be set (a suspended account is refused when it tries).
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(true));
    // Only an administrator may lock and suspend other accounts.
    if services.users.is_admin(&user.user_id).await? {
        capabilities.account_moderation = AccountModerationCapability::new(true, true);
    }
    // `POST /login/get_token` is served to every user (each has a password to confirm with).
    capabilities.get_login_token = GetLoginTokenCapability::new(true);
    Ok(get_capabilities::v3::Response::new(capabilities))
}

async fn discover_homeserver(
    services: Arc<Services>,
    _: Anonymous,
    _: discover_homeserver::Request,
) -> Result<discover_homeserver::Response> {
    let base_url = &services.config.well_known.client;
    if base_url.is_empty() {
        return Err(Error::not_found("No client discovery information is configured"));
    }
    Ok(discover_homeserver::Response::new(discover_homeserver::HomeserverInfo::new(
        base_url.clone(),
    )))
}

/// `/.well-known/matrix/server`: where other servers reach this one, when configured.
async fn discover_federation_server(
    services: Arc<Services>,
    _: Anonymous,
    _: ruma::api::federation::discovery::discover_homeserver::Request,
) -> Result<ruma::api::federation::discovery::discover_homeserver::Response> {
    let server = &services.config.well_known.server;
    if server.is_empty() {
        return Err(Error::not_found("No server discovery information is configured"));
    }
    let server = ruma::OwnedServerName::try_from(server.as_str())
        .map_err(|e| anyhow::anyhow!("[well_known] server is not a server name: {e}"))?;
    Ok(ruma::api::federation::discovery::discover_homeserver::Response::new(server))
}

/// `/.well-known/matrix/support`: the administrators' contacts and support page of
/// `[well_known]`, or 404 when neither is configured, as the spec says.
async fn discover_support(
    services: Arc<Services>,
    _: Anonymous,
    _: discover_support::Request,
) -> Result<discover_support::Response> {
    let config = &services.config.well_known;
    if config.contacts.is_empty() && config.support_page.is_empty() {
        return Err(Error::not_found("No support information is configured"));
    }
    let contacts = config.contacts.iter().map(support_contact).collect::<Result<Vec<_>>>()?;
    let mut response = discover_support::Response::with_contacts(contacts);
    response.support_page = (!config.support_page.is_empty()).then(|| config.support_page.clone());
    Ok(response)
}

/// A contact of `[well_known] contacts`, which the configuration's validation already checked.
fn support_contact(contact: &crate::config::SupportContact) -> Result<discover_support::Contact> {
    use discover_support::{Contact, ContactRole};
    let role = ContactRole::from(contact.role.as_str());
    let mut answer = match &contact.matrix_id {
        Some(matrix_id) => {
            let user_id = ruma::OwnedUserId::try_from(matrix_id.as_str())
                .map_err(|e| anyhow::anyhow!("[well_known] contact {matrix_id:?}: {e}"))?;
            Contact::with_matrix_id(role, user_id)
        }
        None => Contact::with_email_address(role, String::new()),
    };
    answer.email_address = contact.email_address.clone();
    Ok(answer)
}
