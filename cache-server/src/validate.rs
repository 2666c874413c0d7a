//! Checks of a write's keys, value sizes and op count, done before anything is ordered so that
//! bad input changes nothing.

use crate::error::ServerError;
use protocol::key;
use protocol::limits::BATCH_OPS_MAX;
use protocol::message::data::{Condition, Op, UpdateRequest};

/// Checks the keys and value sizes of a write before anything is ordered.
pub fn validate_request(
    request: &UpdateRequest,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<(), ServerError> {
    if request.ops.is_empty() {
        return Err(ServerError::ConditionFailed {
            detail: "a write needs at least one op".into(),
        });
    }
    let count = request.ops.len() + request.conditions.len();
    if count > BATCH_OPS_MAX {
        return Err(ServerError::TooLarge { what: "batch (ops)", len: count, max: BATCH_OPS_MAX });
    }
    for op in &request.ops {
        match op {
            Op::Put { key, value, .. } => {
                key::validate_mutable(key, key_bytes_max)?;
                if value.len() > value_bytes_max {
                    return Err(ServerError::TooLarge {
                        what: "value",
                        len: value.len(),
                        max: value_bytes_max,
                    });
                }
            }
            Op::Mkdir { key } | Op::Delete { key, .. } => {
                key::validate_mutable(key, key_bytes_max)?
            }
            Op::Rename { from, to } => {
                key::validate_mutable(from, key_bytes_max)?;
                key::validate_mutable(to, key_bytes_max)?;
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
    }
    for condition in &request.conditions {
        if let Condition::KeyZxid { key, .. } = condition {
            key::validate(key, key_bytes_max)?;
        }
    }
    Ok(())
}
