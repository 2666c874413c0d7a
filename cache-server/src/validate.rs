//! Checks of a write's shape (op count, keys, value sizes, which ops a write may carry), done
//! before anything is ordered so that bad input changes nothing. The rules are
//! `protocol::batch`'s; this only applies them with the server's limits.

use crate::error::ServerError;
use protocol::batch::{self, Limits};
use protocol::message::data::UpdateRequest;

/// Checks the shape of a write before anything is ordered ([`batch::check_write`]; the writer
/// is not known here, so the release of another client's lock is left to the state machine).
pub fn validate_request(
    request: &UpdateRequest,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<(), ServerError> {
    let limits = Limits { key_bytes_max, value_bytes_max };
    Ok(batch::check_write(&request.ops, &request.conditions, &limits, None)?)
}
