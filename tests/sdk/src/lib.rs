//! End-to-end test helpers that drive the real `hearth` binary through the `matrix-sdk` client.
//!
//! The binary under test is named by the `HEARTH_BIN` environment variable (this crate is its own
//! workspace, so Cargo cannot point at it). [`server::TestServer`] starts it on a free port with
//! a temporary data directory, kills it with SIGKILL and restarts it on the same data;
//! [`client`] registers and logs users in with fresh in-memory clients, syncs, and reads room
//! history.
//!
//! Run with, for example:
//!
//! ```text
//! HEARTH_BIN=/path/to/target/debug/hearth cargo test
//! ```

pub mod client;
pub mod server;

use tracing_subscriber::filter::LevelFilter;

/// Sends warnings and errors (the SDK logs each failed request with its method, URI and status)
/// to the test's captured output, so that a failing test shows which request broke it.
///
/// Calling it more than once is harmless.
pub fn init_logging() {
    let _ =
        tracing_subscriber::fmt().with_max_level(LevelFilter::WARN).with_test_writer().try_init();
}
