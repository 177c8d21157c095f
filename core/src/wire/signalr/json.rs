//! TODO(issue 3): in progress
