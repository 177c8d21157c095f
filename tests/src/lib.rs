//! Cross-crate end-to-end and interop tests live in `tests/tests/`; this library holds what they
//! share.

pub mod openai_backend;
