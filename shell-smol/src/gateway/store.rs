//! The embedded store: one SQLite file (WAL) holding what the gateway machine persists, so that
//! `Gateway::restore` rebuilds nodes, tokens, pairings and commands after a restart or a crash.
//!
//! # Schema (version 1, in `PRAGMA user_version`)
//! Each row holds one record as the machine serialised it (JSON), keyed so that the store
//! compacts as it goes (docs of `nodelink_core::gateway::dispatch` records):
//! - `nodes`: the auth record of each node (token hash, state, scopes), replaced in place.
//! - `pairings`: open pairing requests by (node id, secret hash); `Delete` removes the row.
//! - `dispatch_nodes`: the dispatcher's record of each node; `NodeRemoved` deletes it.
//! - `command_records`: each command's records in write order (`seq`). `Finished` drops the
//!   command's `Approved`/`CancelRequested`/`Part` rows, `Forgotten` drops all of them.
//!
//! One transaction per drain of the machine ([`Store::write`]), committed before the shell
//! answers anything that depends on it. WAL with `synchronous=NORMAL` loses nothing when the
//! process dies (SIGKILL); only a power cut can lose the last transactions.

use std::path::Path;

use nodelink_core::gateway::dispatch::DispatchRecord;
use nodelink_core::gateway::pairing::PairingPersist;
use nodelink_core::gateway::StoreRecord;
use rusqlite::{params, Connection};

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: a stored record cannot be read ({0}); refusing to start rather than lose it")]
    Corrupt(String),
    #[error("store: schema version {found} is newer than this nodelink knows ({SCHEMA_VERSION})")]
    NewerSchema { found: i64 },
    #[error("store: a record of a kind this store does not know: {0}")]
    Unsupported(String),
    #[error("store: cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The open store. Used by the driver thread only.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        match version {
            0 => {
                conn.execute_batch(
                    "BEGIN;
                     CREATE TABLE nodes (node_id TEXT PRIMARY KEY, record TEXT NOT NULL);
                     CREATE TABLE pairings (node_id TEXT NOT NULL, secret BLOB NOT NULL,
                         record TEXT NOT NULL, PRIMARY KEY (node_id, secret));
                     CREATE TABLE dispatch_nodes (node TEXT PRIMARY KEY, record TEXT NOT NULL);
                     CREATE TABLE command_records (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                         command_id TEXT NOT NULL, kind TEXT NOT NULL, record TEXT NOT NULL);
                     CREATE INDEX command_records_by_id ON command_records (command_id);
                     PRAGMA user_version = 1;
                     COMMIT;",
                )?;
            }
            SCHEMA_VERSION => {}
            found => return Err(StoreError::NewerSchema { found }),
        }
        Ok(Store { conn })
    }

    /// Every stored record, in the order `Gateway::restore` wants them.
    pub fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        let mut records = Vec::new();
        let mut read = |sql: &str, wrap: &dyn Fn(&str) -> Result<StoreRecord, String>| {
            let mut statement = self.conn.prepare(sql)?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            for row in rows {
                let json = row?;
                records.push(wrap(&json).map_err(StoreError::Corrupt)?);
            }
            Ok::<(), StoreError>(())
        };
        read("SELECT record FROM nodes ORDER BY node_id", &|json| {
            serde_json::from_str(json)
                .map(|r| StoreRecord::Node(Box::new(r)))
                .map_err(|e| format!("node: {e}"))
        })?;
        read("SELECT record FROM pairings", &|json| {
            serde_json::from_str(json)
                .map(|r| StoreRecord::Pairing(Box::new(PairingPersist::Put(r))))
                .map_err(|e| format!("pairing: {e}"))
        })?;
        read("SELECT record FROM dispatch_nodes ORDER BY node", &|json| {
            serde_json::from_str(json)
                .map(|r| StoreRecord::Dispatch(DispatchRecord::Node(r)))
                .map_err(|e| format!("dispatcher node: {e}"))
        })?;
        read("SELECT record FROM command_records ORDER BY seq", &|json| {
            serde_json::from_str(json)
                .map(StoreRecord::Dispatch)
                .map_err(|e| format!("command: {e}"))
        })?;
        Ok(records)
    }

    /// Writes one drain's records in one transaction.
    pub fn write<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a StoreRecord>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for record in records {
            apply(&tx, record)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The connection, for tests that break it on purpose.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// Moves the WAL into the main file (at shutdown), so the db file stands alone.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn apply(tx: &rusqlite::Transaction<'_>, record: &StoreRecord) -> Result<(), StoreError> {
    match record {
        StoreRecord::Node(node) => {
            tx.execute(
                "INSERT INTO nodes (node_id, record) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET record = excluded.record",
                params![node.node_id, serde_json::to_string(node)?],
            )?;
        }
        StoreRecord::Pairing(persist) => match &**persist {
            PairingPersist::Put(pairing) => {
                tx.execute(
                    "INSERT INTO pairings (node_id, secret, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT (node_id, secret) DO UPDATE SET record = excluded.record",
                    params![
                        pairing.node_id,
                        &pairing.secret_sha256[..],
                        serde_json::to_string(pairing)?
                    ],
                )?;
            }
            PairingPersist::Delete {
                node_id,
                secret_sha256,
            } => {
                tx.execute(
                    "DELETE FROM pairings WHERE node_id = ?1 AND secret = ?2",
                    params![node_id, &secret_sha256[..]],
                )?;
            }
            // A kind of pairing record newer than this store: refuse rather than drop it.
            other => {
                return Err(StoreError::Unsupported(format!("{other:?}")));
            }
        },
        StoreRecord::Dispatch(DispatchRecord::Node(node)) => {
            tx.execute(
                "INSERT INTO dispatch_nodes (node, record) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET record = excluded.record",
                params![node.node, serde_json::to_string(node)?],
            )?;
        }
        StoreRecord::Dispatch(DispatchRecord::NodeRemoved { node }) => {
            tx.execute("DELETE FROM dispatch_nodes WHERE node = ?1", params![node])?;
        }
        StoreRecord::Dispatch(DispatchRecord::Forgotten { command_id }) => {
            tx.execute(
                "DELETE FROM command_records WHERE command_id = ?1",
                params![command_id],
            )?;
        }
        StoreRecord::Dispatch(command) => {
            let (command_id, kind): (&str, &str) = match command {
                DispatchRecord::Created(c) => (&*c.command_id, "created"),
                DispatchRecord::Approved { command_id } => (command_id, "approved"),
                DispatchRecord::CancelRequested { command_id } => (command_id, "cancelRequested"),
                DispatchRecord::Part { command_id, .. } => (command_id, "part"),
                DispatchRecord::Finished { command_id, .. } => (&**command_id, "finished"),
                // Handled above; listed so that a new kind fails to compile here.
                DispatchRecord::Node(_)
                | DispatchRecord::NodeRemoved { .. }
                | DispatchRecord::Forgotten { .. } => return Ok(()),
            };
            if kind == "finished" {
                tx.execute(
                    "DELETE FROM command_records WHERE command_id = ?1 AND kind != 'created'",
                    params![command_id],
                )?;
            }
            tx.execute(
                "INSERT INTO command_records (command_id, kind, record) VALUES (?1, ?2, ?3)",
                params![command_id, kind, serde_json::to_string(command)?],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
