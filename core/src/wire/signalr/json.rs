//! TODO(issue 3): placeholder until the JSON codec lands from helper/json.
use super::{DecodeError, HubMessage, PayloadError};
pub fn encode_record(_message: &HubMessage, _out: &mut Vec<u8>) -> Result<(), PayloadError> {
    unimplemented!()
}
pub fn decode_record(_record: &[u8]) -> Result<HubMessage, DecodeError> {
    unimplemented!()
}
