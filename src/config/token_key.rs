//! The contact token key: `-token-key` as hex or a file holding it, else the key file in
//! `-state-dir`, created once with random bytes and linked into place atomically.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom as _, SystemRandom};
use thiserror::Error;

/// The generated token key's file in `-state-dir`.
pub(super) const TOKEN_KEY_FILE: &str = "roundabout.key";

#[derive(Debug, Error)]
pub enum TokenKeyError {
    #[error("\"{value}\" is neither 64 hex digits nor a readable file: {source}")]
    Unreadable { value: String, source: io::Error },
    #[error("{}: expected 64 hex digits", .0.display())]
    NotHex(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no random bytes from the system")]
    Random,
}

/// `-token-key` as 64 hex digits or a file holding them; without it the key file in the state
/// directory, created with a fresh random key on first start so tokens survive restarts.
pub(super) fn load(value: Option<&str>, state_dir: &Path) -> Result<[u8; 32], TokenKeyError> {
    match value {
        Some(text) => match decode_key_hex(text) {
            Some(key) => Ok(key),
            None => {
                let path = PathBuf::from(text);
                let contents =
                    fs::read_to_string(&path).map_err(|source| TokenKeyError::Unreadable {
                        value: text.to_owned(),
                        source,
                    })?;
                decode_key_hex(contents.trim()).ok_or(TokenKeyError::NotHex(path))
            }
        },
        None => load_or_create_key_file(&state_dir.join(TOKEN_KEY_FILE)),
    }
}

fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], TokenKeyError> {
    let io_error = |source| TokenKeyError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(contents) => {
            return decode_key_hex(contents.trim())
                .ok_or_else(|| TokenKeyError::NotHex(path.to_owned()));
        }
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(io_error(error)),
        Err(_) => {}
    }
    let mut key = [0_u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| TokenKeyError::Random)?;
    // Written whole to a private file first, then linked into place: hard_link fails if the key
    // file exists, so two instances starting at once agree on one complete key.
    let staging = path.with_extension(format!("key.{}", std::process::id()));
    let staged = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut file| writeln!(file, "{}", encode_hex(&key)));
    let linked = staged.and_then(|()| fs::hard_link(&staging, path));
    // The staging file is only a vehicle; failing to remove it loses nothing.
    let _ = fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let contents = fs::read_to_string(path).map_err(io_error)?;
            decode_key_hex(contents.trim()).ok_or_else(|| TokenKeyError::NotHex(path.to_owned()))
        }
        Err(error) => Err(io_error(error)),
    }
}

pub(super) fn decode_key_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0_u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(key)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
