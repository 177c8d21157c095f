//! The node runtime (issue 7): drives `nodelink_core::node::Node` with real sockets and runs
//! executors on worker threads.
