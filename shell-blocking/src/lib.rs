//! The blocking shell (mio + std threads) that drives `nodelink-core`'s node machine on minimal
//! hosts. Built in issue #9; this crate is a placeholder so the workspace has its final shape.
