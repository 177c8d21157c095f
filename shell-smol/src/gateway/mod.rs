//! The gateway server (issue 6): drives `nodelink_core::gateway::Gateway` with real sockets.
