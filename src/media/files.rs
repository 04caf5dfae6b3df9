//! The media files in the data directory, content-addressed: the bytes with SHA-256 `abcd…` are
//! `<data_dir>/media/ab/cd/abcd…`, so the same bytes uploaded twice are one file.
//!
//! A file is written to a temporary file in `<data_dir>/media/tmp/`, flushed to disk and renamed
//! into place, so a file under its hash is always whole. Only the standard library's portable
//! file operations are used. Files are never deleted here: a row may name one at any time.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rand::{Rng as _, distributions::Alphanumeric};
use sha2::{Digest as _, Sha256};

/// The folder of media files inside the data directory.
pub const MEDIA_DIR: &str = "media";

/// The media files of one data directory.
#[derive(Clone, Debug)]
pub struct Files {
    root: PathBuf,
}

impl Files {
    /// The files under `<data_dir>/media`; the folders are created when the first file is written.
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join(MEDIA_DIR) }
    }

    /// Stores `bytes` (unless a file with the same hash is there already) and returns their
    /// SHA-256 in lowercase hex. Blocking: run it off the async runtime.
    pub fn write(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let sha256 = sha256_hex(bytes);
        let path = self.path_of(&sha256)?;
        if path.is_file() {
            return Ok(sha256);
        }
        let temporary = self.write_temporary(bytes)?;
        let folder = path.parent().context("a media path has a folder")?;
        fs::create_dir_all(folder)
            .with_context(|| format!("cannot create the media folder {}", folder.display()))?;
        fs::rename(&temporary, &path).with_context(|| {
            let _ = fs::remove_file(&temporary);
            format!("cannot move a media file into {}", path.display())
        })?;
        sync_folder(folder);
        Ok(sha256)
    }

    /// The bytes stored under `sha256`. Blocking: run it off the async runtime.
    pub fn read(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.path_of(sha256)?;
        fs::read(&path).with_context(|| format!("cannot read the media file {}", path.display()))
    }

    /// Where the bytes with this hash live. Only a 64-digit lowercase hex hash names a file, so
    /// a stored value can never reach outside the media folder.
    pub fn path_of(&self, sha256: &str) -> anyhow::Result<PathBuf> {
        let is_hash = sha256.len() == 64
            && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        anyhow::ensure!(is_hash, "{sha256:?} is not a SHA-256 in hex");
        Ok(self.root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256))
    }

    /// Writes the bytes to a new file in the temporary folder and flushes it to disk.
    fn write_temporary(&self, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let folder = self.root.join("tmp");
        fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create the media folder {}", folder.display()))?;
        let name: String =
            rand::thread_rng().sample_iter(Alphanumeric).take(16).map(char::from).collect();
        let path = folder.join(format!("{name}.part"));
        let written = write_synced(&path, bytes);
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written.with_context(|| format!("cannot write the media file {}", path.display()))?;
        Ok(path)
    }
}

/// Creates `path` (it must not exist), writes `bytes` and waits until they are on disk.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a folder's entries (the rename) to disk where the platform allows opening a folder;
/// Windows does not, and its rename is durable once the file's own data is.
fn sync_folder(folder: &Path) {
    if let Ok(handle) = fs::File::open(folder) {
        let _ = handle.sync_all();
    }
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_one_file_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let first = files.write(b"hello").unwrap();
        let second = files.write(b"hello").unwrap();
        assert_eq!(first, second);
        assert_eq!(first, sha256_hex(b"hello"));
        assert_eq!(files.read(&first).unwrap(), b"hello");
        let path = files.path_of(&first).unwrap();
        assert!(path.starts_with(dir.path().join("media").join(&first[0..2]).join(&first[2..4])));
        let temporary = fs::read_dir(dir.path().join("media").join("tmp")).unwrap().count();
        assert_eq!(temporary, 0, "no temporary file is left behind");
    }

    #[test]
    fn a_hash_that_is_not_hex_names_no_file() {
        let files = Files::new(Path::new("/data"));
        for bad in ["", "../../etc/passwd", &"A".repeat(64), &"0".repeat(63)] {
            assert!(files.path_of(bad).is_err(), "{bad}");
        }
    }
}
