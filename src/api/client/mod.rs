//! The client-server API's handlers, one file per area. Each handler is named after its ruma
//! endpoint module, parses with ruma, authorizes, calls one operation and builds the response.

mod account;
mod account_data;
mod devices;
mod directory;
mod discovery;
mod events;
mod profile;
mod rooms;
mod sync;

use super::router::Router;

/// Registers every client-server endpoint Hearth serves.
pub fn register(router: &mut Router) {
    account::routes(router);
    account_data::routes(router);
    devices::routes(router);
    directory::routes(router);
    discovery::routes(router);
    events::routes(router);
    profile::routes(router);
    rooms::routes(router);
    sync::routes(router);
}
