//! The client-server API's handlers, one file per area. Each handler is named after its ruma
//! endpoint module, parses with ruma, authorizes, calls one operation and builds the response.

mod discovery;

use super::router::Router;

/// Registers every client-server endpoint Hearth serves.
pub fn register(router: &mut Router) {
    discovery::register(router);
}
