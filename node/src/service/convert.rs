//! Between the proto's conventions and the store's.

use std::time::Duration;

use kcache_client::proto::{GetResponse, SetCondition, SetRequest};
use tonic::Status;

use super::MAX_BATCH;
use crate::store::{Condition, Entry, StoreError, Ttl};
pub(super) fn prefixed(label: &str, status: Status) -> Status {
    Status::new(status.code(), format!("{label}: {}", status.message()))
}

pub(super) fn get_response(entry: Option<Entry>) -> GetResponse {
    match entry {
        Some(entry) => GetResponse {
            found: true,
            value: entry.value,
            version: entry.version,
            ttl_ms: entry.ttl_ms,
            deleted_version: 0,
        },
        None => GetResponse::default(),
    }
}

/// The proto's TTL convention: absent = the node default, 0 = never, else milliseconds.
pub(super) fn ttl(ttl_ms: Option<u64>) -> Ttl {
    match ttl_ms {
        None => Ttl::Default,
        Some(0) => Ttl::Never,
        Some(ms) => Ttl::After(Duration::from_millis(ms)),
    }
}

pub(super) fn condition(req: &SetRequest) -> Result<Condition, Status> {
    match SetCondition::try_from(req.condition) {
        Ok(SetCondition::Always) => Ok(Condition::Always),
        Ok(SetCondition::IfAbsent) => Ok(Condition::IfAbsent),
        Ok(SetCondition::IfPresent) => Ok(Condition::IfPresent),
        Ok(SetCondition::IfVersion) => Ok(Condition::IfVersion(req.version)),
        Err(_) => Err(Status::invalid_argument(format!(
            "condition {} is not a SetCondition (0 always, 1 if absent, 2 if present, 3 if version)",
            req.condition
        ))),
    }
}

pub(super) fn check_batch(len: usize) -> Result<(), Status> {
    if len > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "batch has {len} keys; the limit is {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Store errors as the statuses the API documents.
pub fn to_status(err: StoreError) -> Status {
    let message = err.to_string();
    match err {
        StoreError::EmptyKey { .. }
        | StoreError::KeyTooLong { .. }
        | StoreError::ValueTooLarge { .. }
        | StoreError::TtlTooLong { .. }
        | StoreError::TtlZero => Status::invalid_argument(message),
        StoreError::LargerThanMemory { .. } => Status::resource_exhausted(message),
        StoreError::NotAnInteger | StoreError::Overflow { .. } => {
            Status::failed_precondition(message)
        }
        StoreError::VersionAhead { .. } => Status::invalid_argument(message),
    }
}
