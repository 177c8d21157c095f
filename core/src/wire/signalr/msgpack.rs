//! TODO(issue 3): placeholder until the MessagePack codec lands from helper/msgpack.
use super::{DecodeError, HubMessage, PayloadError};
pub fn encode(_message: &HubMessage, _out: &mut Vec<u8>) -> Result<(), PayloadError> {
    unimplemented!()
}
pub fn decode_body(_body: &[u8]) -> Result<HubMessage, DecodeError> {
    unimplemented!()
}
