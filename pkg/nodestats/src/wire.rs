//! The samples' wire format: what an agent `POST`s to the server's `/v1-mini/samples` (JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sampling round (or several, merged) of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub node: String,
    pub series: Vec<SeriesSamples>,
}

/// The points of one series: its labels (the metric name is `__name__`) and `(unix ms, value)`
/// pairs in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSamples {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

impl SampleBatch {
    /// The batch as the request body.
    pub fn to_json(&self) -> Vec<u8> {
        // a map with string keys, strings and finite numbers cannot fail to serialize
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a request body (the server's ingest endpoint calls this).
    pub fn from_json(body: &[u8]) -> Result<SampleBatch, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Number of points in the batch.
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_batch_json_has_the_documented_shape() {
        let batch = SampleBatch {
            node: "n1".into(),
            series: vec![SeriesSamples {
                labels: BTreeMap::from([
                    ("__name__".to_string(), "node_load1".to_string()),
                    ("node".to_string(), "n1".to_string()),
                ]),
                samples: vec![(1_700_000_000_000, 0.5), (1_700_000_010_000, 1.0)],
            }],
        };
        let value: serde_json::Value =
            serde_json::from_slice(&batch.to_json()).expect("valid json");
        assert_eq!(
            value,
            serde_json::json!({
                "node": "n1",
                "series": [{
                    "labels": {"__name__": "node_load1", "node": "n1"},
                    "samples": [[1_700_000_000_000_i64, 0.5], [1_700_000_010_000_i64, 1.0]],
                }],
            })
        );
        assert_eq!(
            SampleBatch::from_json(&batch.to_json()).expect("decode"),
            batch
        );
        assert_eq!(batch.points(), 2);
    }

    #[test]
    fn sample_batch_from_json_garbage_is_an_error() {
        assert!(SampleBatch::from_json(b"{\"node\": 1}").is_err());
    }
}
