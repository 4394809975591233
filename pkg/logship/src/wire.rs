//! The JSON body of `POST /v1-mini/logs`: a node's batch of log entries, grouped by source stream.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub node: String,
    pub streams: Vec<LogStream>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStream {
    /// namespace, pod, container, node, stream (stdout|stderr) and the pod's labels (`label_<k>` is NOT
    /// used: pod labels go in `pod_labels`)
    pub labels: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    /// identity of the source file: "<node>/<pod uid>/<container>/<restart>/<file generation>"
    pub source: String,
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub offset: u64,
    pub timestamp_ns: i64,
    pub line: String,
}
// `offset`: the byte offset of the entry's first CRI line in its source; strictly increasing per source.
// The server drops an entry whose offset is <= the last offset it stored for that source (exactly once).
