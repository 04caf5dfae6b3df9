//! The server-server API's handlers. Federation is not served yet; what is here answers requests
//! that need no signed server request. Each handler is named after its ruma endpoint module and
//! registered with the same router as the client-server API.

mod openid;

use super::router::Router;

/// Registers every server-server endpoint Hearth serves.
pub fn register(router: &mut Router) {
    openid::routes(router);
}
