//! The node's state directory: where `nodelink node pair` leaves the token that `nodelink node
//! run` uses. One file, `token.json` (`{"gatewayUrl": ..., "token": ...}`), mode 0600 in a 0700
//! directory, written atomically (temporary file + rename) so that a crash never leaves half a
//! token; deleted when the gateway revokes the node.

use std::io::Write;
use std::path::{Path, PathBuf};

use nodelink_core::wire::rest::NodeToken;
use serde::{Deserialize, Serialize};

/// The file name of the stored token inside the state directory.
pub const TOKEN_FILE: &str = "token.json";

/// What pairing produced: the token and the gateway it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub gateway_url: String,
    pub token: NodeToken,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsFile {
    gateway_url: String,
    token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no state directory: set --state-dir, XDG_STATE_HOME or HOME")]
    NoDirectory,
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path} is not a valid token file: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// A node's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// `$XDG_STATE_HOME/nodelink`, else `$HOME/.local/state/nodelink`.
    pub fn default_dir() -> Result<StateDir, StateError> {
        let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        if let Some(state) = from("XDG_STATE_HOME") {
            return Ok(StateDir::new(PathBuf::from(state).join("nodelink")));
        }
        match from("HOME") {
            Some(home) => Ok(StateDir::new(
                PathBuf::from(home).join(".local/state/nodelink"),
            )),
            None => Err(StateError::NoDirectory),
        }
    }

    /// `dir` when given, else [`StateDir::default_dir`].
    pub fn resolve(dir: Option<PathBuf>) -> Result<StateDir, StateError> {
        match dir {
            Some(dir) => Ok(StateDir::new(dir)),
            None => StateDir::default_dir(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn token_path(&self) -> PathBuf {
        self.path.join(TOKEN_FILE)
    }

    /// The stored credentials, `None` when the node is not paired.
    pub fn load(&self) -> Result<Option<Credentials>, StateError> {
        let path = self.token_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let invalid = |detail: String| StateError::Invalid {
            path: path.clone(),
            detail,
        };
        let file: CredentialsFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        // The parse error never repeats the token.
        let token = NodeToken::parse(&file.token).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Credentials {
            gateway_url: file.gateway_url,
            token,
        }))
    }

    /// Stores `credentials` (mode 0600, atomically), creating the directory (0700).
    pub fn save(&self, credentials: &Credentials) -> Result<(), StateError> {
        create_private_dir(&self.path)?;
        let file = CredentialsFile {
            gateway_url: credentials.gateway_url.clone(),
            token: credentials.token.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Invalid {
            path: self.token_path(),
            detail: e.to_string(),
        })?;
        let temp = self
            .path
            .join(format!(".{TOKEN_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&temp).map_err(|e| io(&temp, e))?;
        out.write_all(&bytes)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.sync_all())
            .map_err(|e| io(&temp, e))?;
        drop(out);
        let path = self.token_path();
        std::fs::rename(&temp, &path).map_err(|e| io(&path, e))
    }

    /// Deletes the stored token; true when there was one.
    pub fn remove(&self) -> Result<bool, StateError> {
        let path = self.token_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }
}

fn io(path: &Path, error: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_owned(),
        detail: error.to_string(),
    }
}

fn create_private_dir(path: &Path) -> Result<(), StateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nodelink-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saved_credentials_load_back_and_the_file_is_private() {
        let dir = temp_dir("roundtrip");
        let state = StateDir::new(dir.join("nested"));
        assert_eq!(state.load().unwrap(), None);
        let credentials = Credentials {
            gateway_url: "https://gw.example.com".into(),
            token: NodeToken::parse("node-1.s3cr.et").unwrap(),
        };
        state.save(&credentials).unwrap();
        assert_eq!(state.load().unwrap(), Some(credentials.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.token_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Saving again replaces the file.
        let other = Credentials {
            gateway_url: "http://127.0.0.1:1".into(),
            token: NodeToken::parse("node-1.other").unwrap(),
        };
        state.save(&other).unwrap();
        assert_eq!(state.load().unwrap(), Some(other));
        assert!(state.remove().unwrap());
        assert!(!state.remove().unwrap());
        assert_eq!(state.load().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_token_file_is_an_error_that_does_not_repeat_the_secret() {
        let dir = temp_dir("damaged");
        let state = StateDir::new(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            state.token_path(),
            r#"{"gatewayUrl":"http://x","token":"no-dot-topsecret"}"#,
        )
        .unwrap();
        let error = state.load().unwrap_err().to_string();
        assert!(error.contains("token.json"), "{error}");
        assert!(!error.contains("topsecret"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
