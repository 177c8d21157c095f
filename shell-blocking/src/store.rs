//! The node's state directory: `token.json` (`{"gatewayUrl": ..., "token": ...}`), mode 0600 in a
//! 0700 directory; the same file the smol node (`nodelink node`) uses, so either binary can run a
//! node the other paired.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nodelink_core::wire::rest::NodeToken;
use serde_json::{json, Value};

use crate::Error;

/// The token file's name inside the state directory.
pub const TOKEN_FILE: &str = "token.json";

/// What `pair` stored and `run` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub gateway_url: String,
    pub token: NodeToken,
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join(TOKEN_FILE)
    }

    /// The stored token; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<StoredToken>, Error> {
        let path = self.token_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::State(format!("{}: {e}", path.display()))),
        };
        let bad = |what: &str| Error::State(format!("{}: {what}", path.display()));
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        let gateway_url = value
            .get("gatewayUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("`gatewayUrl` is missing"))?
            .to_owned();
        let token = value
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("`token` is missing"))?;
        let token = NodeToken::parse(token).map_err(|e| bad(&format!("`token`: {e}")))?;
        Ok(Some(StoredToken { gateway_url, token }))
    }

    /// Writes the token (a temporary file renamed over the old one, so a crash leaves either).
    pub fn save(&self, stored: &StoredToken) -> Result<(), Error> {
        let fail = |e: std::io::Error| Error::State(format!("{}: {e}", self.dir.display()));
        create_private_dir(&self.dir).map_err(fail)?;
        let body = json!({"gatewayUrl": stored.gateway_url, "token": stored.token.to_string()});
        let tmp = self.dir.join(".token.json.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(fail)?;
        file.write_all(body.to_string().as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        fs::rename(&tmp, self.token_path()).map_err(fail)
    }

    /// Deletes the token (revoked); no token is no error.
    pub fn remove(&self) -> Result<(), Error> {
        match fs::remove_file(self.token_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::State(format!(
                "{}: {e}",
                self.token_path().display()
            ))),
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The default state directory: `$NODELINK_STATE_DIR`, else `$XDG_STATE_HOME/nodelink`, else
/// `$HOME/.local/state/nodelink`, else `./nodelink-state`.
pub fn default_state_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("NODELINK_STATE_DIR") {
        return dir.into();
    }
    if let Some(dir) = env("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("nodelink");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".local/state/nodelink");
    }
    PathBuf::from("nodelink-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nodelink-blocking-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_loads_and_removes_the_token_with_private_modes() {
        let dir = temp_dir("store");
        let state = StateDir::new(dir.join("nested"));
        assert_eq!(state.load().unwrap(), None);
        let stored = StoredToken {
            gateway_url: "http://127.0.0.1:1".into(),
            token: NodeToken::parse("node-1.s3cret").unwrap(),
        };
        state.save(&stored).unwrap();
        assert_eq!(state.load().unwrap(), Some(stored));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(state.token_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(state.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        state.remove().unwrap();
        assert_eq!(state.load().unwrap(), None);
        state.remove().unwrap();
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_token_file_is_a_clear_error() {
        let dir = temp_dir("damaged");
        let state = StateDir::new(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            state.token_path(),
            r#"{"gatewayUrl":"http://x","token":"no-dot"}"#,
        )
        .unwrap();
        let error = state.load().unwrap_err().to_string();
        assert!(
            error.contains("token.json") && error.contains("`token`"),
            "{error}"
        );
        let _ = fs::remove_dir_all(dir);
    }
}
