//! TODO(issue 3): in progress
pub const PROTOCOL_VERSION: &str = "2026-04-01";
