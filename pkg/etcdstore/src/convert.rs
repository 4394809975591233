//! Conversions between etcd's messages and the store's types, and error classification.

use etcd_client::ResponseHeader;
use mini_store::{KeyValue, Revision, StoreError};

/// A stored etcd key-value as the store's [`KeyValue`]; keys must be UTF-8.
pub(crate) fn from_etcd(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv
        .key_str()
        .map_err(|_| {
            StoreError::Backend(format!(
                "the etcd key {:?} is not utf-8",
                String::from_utf8_lossy(kv.key())
            ))
        })?
        .to_string();
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: to_revision(kv.create_revision()),
        mod_revision: to_revision(kv.mod_revision()),
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
    header.map_or(0, |h| to_revision(h.revision()))
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

/// Whether `error` means etcd cannot serve requests now (no connection, no leader, no quorum,
/// timeouts) rather than that this request is wrong.
pub(crate) fn is_unavailable(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Maps an etcd error to `Unavailable` (retry later, HTTP 503) or `Backend`.
pub(crate) fn unavailable_or_backend(what: &str, error: &etcd_client::Error) -> StoreError {
    let message = format!("{what}: {}", crate::describe(error));
    if is_unavailable(error) {
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
    }
}
