//! End-to-end encryption on the server's side. This branch holds only the server-side key backup
//! ([`backup`]); device keys, one-time keys, cross-signing and to-device messages live beside it.
//! Nothing here speaks HTTP or SQL, and nothing here can read a key: the server stores what
//! clients encrypted.

pub mod backup;
