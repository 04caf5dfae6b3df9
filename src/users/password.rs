//! Password hashing with Argon2id (PHC strings), off the async runtime.
//!
//! The parameters are one of OWASP's recommended Argon2id settings: 46 MiB, one pass, one lane.
//! Of its equivalent settings this is the one whose memory goes back to the system as soon as a
//! hash is done: glibc serves blocks over 32 MiB straight from the operating system, while the
//! smaller settings' 7 to 19 MiB blocks stay in its per-thread arenas (measured: 50 concurrent
//! registrations with the 19 MiB default left an idle server at 640 MB). At most
//! [`MAX_CONCURRENT_HASHES`] run at once, so a crowd of logins queues instead of taking every
//! core and a gigabyte.

use anyhow::{Context as _, anyhow};
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

/// How many password hashes run at the same time.
const MAX_CONCURRENT_HASHES: usize = 2;

/// The permits for [`MAX_CONCURRENT_HASHES`].
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES);

/// Argon2's memory cost in KiB (46 MiB), passes and lanes for new hashes.
const MEMORY_KIB: u32 = 46 * 1024;
const PASSES: u32 = 1;
const LANES: u32 = 1;

/// The hasher for new passwords. Stored hashes carry their own parameters, which verification
/// uses, so changing these never locks anyone out.
fn hasher() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|error| anyhow!("bad Argon2 parameters: {error}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _permit = HASHING.acquire().await.context("password hashing has stopped")?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow!("cannot hash a password: {error}"))
    })
    .await
    .context("password hashing panicked")?
}

/// Whether `password` matches the stored PHC string.
pub async fn verify(password: String, stored: String) -> anyhow::Result<bool> {
    let _permit = HASHING.acquire().await.context("password hashing has stopped")?;
    tokio::task::spawn_blocking(move || {
        let parsed =
            PasswordHash::new(&stored).map_err(|error| anyhow!("bad stored hash: {error}"))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .context("password verification panicked")?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let stored = super::hash("correct horse".into()).await.unwrap();
        assert!(super::verify("correct horse".into(), stored.clone()).await.unwrap());
        assert!(!super::verify("wrong horse".into(), stored).await.unwrap());
    }
}
