//! GPU command executors through cudarc, with a CPU path. Built in issue #10; this crate is a
//! placeholder so the workspace has its final shape.
