//! The `nodelink` command line. The gateway, node and operator commands arrive with their issues
//! (#6, #7); until then the binary only states what it is.

fn main() {
    println!(
        "nodelink {} (wire protocol {})",
        env!("CARGO_PKG_VERSION"),
        nodelink_core::wire::dto::PROTOCOL_VERSION
    );
}
