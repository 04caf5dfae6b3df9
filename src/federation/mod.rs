//! Federation: for now the server's own signing key, which signs every PDU this server creates.
//!
//! FIXME: no server-server API is served yet (key server, transactions, joins over federation);
//! events are already full PDUs, hashed and signed, so that it can be added without migration.

use std::{fs, path::Path, sync::Arc};

use anyhow::{Context as _, anyhow};
use ruma::{
    OwnedServerName,
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair as _},
};

/// The name of the signing key file inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// The server's identity: its name and ed25519 signing key.
#[derive(Clone)]
pub struct ServerKeys {
    pub server_name: OwnedServerName,
    pub key_pair: Arc<Ed25519KeyPair>,
}

impl ServerKeys {
    /// Loads the signing key from `data_dir`, generating and saving one on first run.
    ///
    /// The file holds the key version and the PKCS#8 document in base64: `ed25519 <version> <key>`.
    pub fn load_or_generate(data_dir: &Path, server_name: OwnedServerName) -> anyhow::Result<Self> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        if !path.exists() {
            let document = Ed25519KeyPair::generate();
            let version = crate::users::random_string(6);
            let line = format!(
                "ed25519 {version} {}\n",
                Base64::<ruma::serde::base64::Standard, _>::new(document.to_vec()).encode()
            );
            write_private(&path, &line)?;
            tracing::info!(path = %path.display(), "generated the server signing key");
        }
        let text = fs::read_to_string(&path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let key_pair = parse_key_file(&text)
            .with_context(|| format!("invalid signing key file {}", path.display()))?;
        Ok(Self { server_name, key_pair: Arc::new(key_pair) })
    }

    /// The key ID, e.g. `ed25519:abc123`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    /// Signs arbitrary bytes (used by tests and, later, federation requests).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_bytes().to_vec()
    }
}

fn parse_key_file(text: &str) -> anyhow::Result<Ed25519KeyPair> {
    let mut parts = text.split_whitespace();
    let (Some("ed25519"), Some(version), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(anyhow!("expected `ed25519 <version> <base64 key>`"));
    };
    let document = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(key)
        .map_err(|error| anyhow!("the key is not base64: {error}"))?;
    Ed25519KeyPair::from_der(document.as_bytes(), version.to_owned())
        .map_err(|error| anyhow!("the key does not parse: {error}"))
}

/// Writes a secret file readable only by its owner where the platform allows it.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // On Windows the file inherits the per-user ACL of the data directory (%APPDATA%).
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the signing key {}", path.display()))?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let name = crate::config::parse_server_name("localhost").unwrap();
        let first = ServerKeys::load_or_generate(dir.path(), name.clone()).unwrap();
        let second = ServerKeys::load_or_generate(dir.path(), name).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.key_pair.public_key(), second.key_pair.public_key());
    }

    #[test]
    fn a_damaged_key_file_is_refused() {
        assert!(parse_key_file("ed25519 v1 not-base64!").is_err());
        assert!(parse_key_file("rsa v1 AAAA").is_err());
    }
}
