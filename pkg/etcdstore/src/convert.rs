//! Conversions between etcd's messages and the store's types, request builders, and error
//! classification.

use mini_store::{KeyValue, Revision, StoreError};

use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::{request_op, Compare, RequestOp, ResponseHeader};
use crate::pb::mvccpb;

/// A stored etcd key-value as the store's [`KeyValue`]; keys must be UTF-8.
pub(crate) fn from_etcd(kv: &mvccpb::KeyValue) -> Result<KeyValue, StoreError> {
    let key = String::from_utf8(kv.key.clone()).map_err(|_| {
        StoreError::Backend(format!(
            "the etcd key {:?} is not utf-8",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    Ok(KeyValue {
        key,
        value: kv.value.clone(),
        create_revision: to_revision(kv.create_revision),
        mod_revision: to_revision(kv.mod_revision),
    })
}

/// etcd revisions are positive `i64`s.
pub(crate) fn to_revision(revision: i64) -> Revision {
    Revision::try_from(revision).unwrap_or_default()
}

pub(crate) fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// The revision a response was served at (0 when etcd sent no header).
pub(crate) fn header_revision(header: Option<&ResponseHeader>) -> Revision {
    header.map_or(0, |h| to_revision(h.revision))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's `range_end`);
/// `"\0"` (every key) for an empty prefix or one of only `0xff` bytes.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `key`'s create revision compared with `revision`.
pub(crate) fn compare_create(key: &str, result: CompareResult, revision: i64) -> Compare {
    Compare {
        result: result as i32,
        target: CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

/// `key`'s mod revision equals `revision`.
pub(crate) fn compare_mod(key: &str, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::ModRevision(revision)),
    }
}

pub(crate) fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// Whether a gRPC status means etcd cannot serve requests now (no connection, no leader, no
/// quorum, timeouts) rather than that this request is wrong.
pub(crate) fn is_unavailable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// Maps an etcd error to `Unavailable` (retry later, HTTP 503) or `Backend`.
pub(crate) fn unavailable_or_backend(what: &str, status: &tonic::Status) -> StoreError {
    let message = format!("{what}: {}", crate::describe_status(status));
    if is_unavailable(status) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
        assert_eq!(prefix_end("a\u{ff}"), b"a\xc3\xc0".to_vec());
    }

    #[test]
    fn unavailable_status_maps_to_unavailable_error() {
        let err = unavailable_or_backend("creating /a", &tonic::Status::unavailable("no leader"));
        assert!(matches!(err, StoreError::Unavailable(ref m) if m.contains("no leader")));
        let err = unavailable_or_backend("creating /a", &tonic::Status::invalid_argument("bad"));
        assert!(matches!(err, StoreError::Backend(_)));
    }
}
