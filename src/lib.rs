//! Hearth: a Matrix homeserver for a household.
//!
//! The crate is a library so that the binary, the integration tests and the benchmark share one
//! code base. `ARCHITECTURE.md` at the repository root maps the modules; in short, `api` speaks
//! HTTP and nothing else does, `store` speaks SQL and nothing else does, and the components in
//! between (`users`, `rooms`, `sync`) talk to each other through `bus` subjects.

#[cfg(feature = "postgres")]
pub mod admin;
pub mod api;
pub mod appservice;
pub mod bus;
pub mod config;
pub mod error;
pub mod federation;
pub mod keys;
pub mod media;
#[cfg(feature = "postgres")]
pub mod migrate;
pub mod outgoing;
pub mod presence;
pub mod push;
pub mod rooms;
pub mod search;
pub mod server;
pub mod services;
pub mod store;
pub mod sync;
pub mod threepids;
pub mod users;
pub mod voip;

pub use self::error::{Error, Result};
