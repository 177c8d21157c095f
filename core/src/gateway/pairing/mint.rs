//! Minting node tokens, and holding a delivered one without holding it in the clear.
//!
//! A token secret is 32 bytes from the gateway's ChaCha20 stream, base64url without padding (43
//! characters of `A-Z a-z 0-9 - _`, section 7.2). Between its delivery and the end of the
//! pairing secret's 15 minutes, the gateway must answer a repeat with the same token (section
//! 7.3). It keeps the token *wrapped*: the 32 bytes XOR `SHA-256("nodelink pairing token wrap
//! v1\0" || pairingSecret)`. The pairing secret is never kept (only its plain SHA-256, a
//! different function of it), so only a request that presents the pairing secret can unwrap the
//! token; the wrapped form never leaves memory.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::rng::Rng;
use crate::wire::rest::NodeToken;

/// Bytes of randomness in a token secret.
pub const TOKEN_SECRET_BYTES: usize = 32;

/// The longest `name` or `platform` kept from a pairing request, in characters.
pub const MAX_INFO_CHARS: usize = 256;

const WRAP_DOMAIN: &[u8] = b"nodelink pairing token wrap v1\0";

/// 256 fresh random bits for a token secret.
pub(crate) fn mint(rng: &mut Rng) -> [u8; TOKEN_SECRET_BYTES] {
    let mut raw = [0u8; TOKEN_SECRET_BYTES];
    rng.fill_bytes(&mut raw);
    raw
}

/// The token `{nodeId}.{base64url(raw)}`.
pub(crate) fn token(node_id: &str, raw: &[u8; TOKEN_SECRET_BYTES]) -> NodeToken {
    NodeToken::new(node_id, &URL_SAFE_NO_PAD.encode(raw))
        .expect("the nodeId was validated on request, and base64url is printable ASCII")
}

/// Wraps (or unwraps: XOR is its own inverse) a token secret with a pairing secret.
pub(crate) fn wrap(raw: &[u8; TOKEN_SECRET_BYTES], pairing_secret: &str) -> [u8; 32] {
    let key: [u8; 32] = Sha256::new()
        .chain_update(WRAP_DOMAIN)
        .chain_update(pairing_secret.as_bytes())
        .finalize()
        .into();
    let mut out = [0u8; 32];
    for (o, (r, k)) in out.iter_mut().zip(raw.iter().zip(key.iter())) {
        *o = r ^ k;
    }
    out
}

/// A `name` or `platform` from a peer, for operators' screens: control characters become
/// spaces, at most [`MAX_INFO_CHARS`] characters are kept, and an empty result is dropped.
pub(crate) fn clean_info(text: Option<&str>) -> Option<String> {
    let text: String = text?
        .chars()
        .take(MAX_INFO_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (!text.trim().is_empty()).then_some(text)
}

/// A code as an operator typed it: surrounding spaces dropped, letters uppercased.
pub(crate) fn normalize_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}
