//! Password hashing with Argon2id (PHC strings), off the async runtime.

use anyhow::{Context as _, anyhow};
use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

/// Hashes a password into a PHC string.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow!("cannot hash a password: {error}"))
    })
    .await
    .context("password hashing panicked")?
}

/// Whether `password` matches the stored PHC string.
pub async fn verify(password: String, stored: String) -> anyhow::Result<bool> {
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
