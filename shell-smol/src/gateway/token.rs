//! The operator API's admin token and the OS randomness the server needs.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ServerError;

/// Where the token of the store at `db` lives: `<db>.admin-token`.
pub fn token_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".admin-token");
    db.with_file_name(name)
}

/// The token given, else the one in the token file, else a new one written there (mode 0600).
pub(crate) fn resolve(given: Option<String>, db: &Path) -> Result<String, ServerError> {
    if let Some(token) = given {
        if token.trim().is_empty() {
            return Err(ServerError::AdminToken("the admin token is empty".into()));
        }
        return Ok(token.trim().to_string());
    }
    let path = token_path(db);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {
            return Err(ServerError::AdminToken(format!(
                "{} is empty: delete it to get a new token",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::AdminToken(format!("{}: {e}", path.display()))),
    }
    let token = random_hex(32).map_err(|e| ServerError::AdminToken(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| ServerError::AdminToken(format!("{}: {e}", path.display())))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ServerError::AdminToken(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// `bytes` random bytes from the OS (getrandom), as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A seed for the gateway machine's RNG, from the OS.
pub(crate) fn seed() -> Result<[u8; 32], getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    Ok(seed)
}
