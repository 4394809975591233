//! Per-second results: the generators' wire format ([`ReportBatch`]), the exact merge of their
//! HDR histograms ([`Merger`]: histograms are added, percentiles are read from the sum, never
//! averaged), and the run's results document ([`RunResults`]) every report is rendered from.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::spec::{Latency, Metric, Threshold, Verdict};
use crate::LoadTestError;

/// Latencies are recorded in microseconds.
pub type Hist = hdrhistogram::Histogram<u64>;
/// Highest latency a histogram holds (one hour, in µs); longer ones saturate.
pub const HIGHEST_US: u64 = 3_600_000_000;

/// An empty histogram: 1 µs to one hour, 3 significant digits.
pub fn new_hist() -> Hist {
    // constant bounds hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5)
    Hist::new_with_bounds(1, HIGHEST_US, 3).expect("constant histogram bounds are valid")
}

/// Records `micros` (clamped into the histogram's range).
pub fn record(h: &mut Hist, micros: u64) {
    let _ = h.record(micros.clamp(1, HIGHEST_US));
}

/// A histogram as base64 of its compressed V2 encoding (what the HDR tools read).
pub fn encode(h: &Hist) -> String {
    let mut buf = Vec::new();
    // writing into a Vec cannot fail for a histogram this crate made
    let _ = V2DeflateSerializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode(text: &str) -> Result<Hist, LoadTestError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| LoadTestError::Report(format!("histogram is not base64: {e}")))?;
    let h: Hist = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| LoadTestError::Report(format!("histogram does not decode: {e:?}")))?;
    let mut out = new_hist();
    out.add(&h)
        .map_err(|e| LoadTestError::Report(format!("histogram out of range: {e:?}")))?;
    Ok(out)
}

/// Milliseconds of a latency histogram's quantiles.
pub fn latency(h: &Hist) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1e3;
    Latency {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1e3,
    }
}

/// One second of one generator, as it sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondReport {
    /// Seconds since the common start.
    pub second: u32,
    /// Requests that finished in this second (answered or failed).
    pub requests: u64,
    /// Answers by status code.
    #[serde(default)]
    pub codes: BTreeMap<String, u64>,
    /// Transport failures by kind (`connect`, `timeout`, `io`).
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Latency of answered (and timed-out) requests from their intended send time, µs.
    pub histogram: String,
    /// How far behind its schedule the generator was at worst this second, ms.
    #[serde(default)]
    pub lag_ms: f64,
}

impl SecondReport {
    /// Failed requests: transport errors plus 4xx/5xx answers.
    pub fn failed(&self) -> u64 {
        failed(&self.codes, &self.errors)
    }
}

fn failed(codes: &BTreeMap<String, u64>, errors: &BTreeMap<String, u64>) -> u64 {
    let bad_codes: u64 = codes
        .iter()
        .filter(|(c, _)| c.parse::<u16>().map(|c| c >= 400).unwrap_or(true))
        .map(|(_, n)| n)
        .sum();
    bad_codes + errors.values().sum::<u64>()
}

/// What a generator posts: some seconds, and whether it has finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportBatch {
    pub generator: u32,
    #[serde(default)]
    pub seconds: Vec<SecondReport>,
    #[serde(default)]
    pub done: bool,
}

/// CPU and memory of one pod or node at one second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub name: String,
    pub cpu_millicores: f64,
    pub memory_bytes: u64,
}

/// The target's pods and their nodes at one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSample {
    pub second: u32,
    #[serde(default)]
    pub pods: Vec<Usage>,
    #[serde(default)]
    pub nodes: Vec<Usage>,
}

/// One second of the whole run (all generators merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondRow {
    pub second: u32,
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub codes: BTreeMap<String, u64>,
    #[serde(default)]
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Latency,
    /// The merged histogram (base64 compressed V2).
    pub histogram: String,
}

/// Totals of the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// Percent of requests that failed.
    pub error_rate: f64,
    /// Requests per second the generators achieved.
    pub achieved_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_rate: Option<f64>,
    pub latency: Latency,
    #[serde(default)]
    pub codes: BTreeMap<String, u64>,
    #[serde(default)]
    pub error_kinds: BTreeMap<String, u64>,
    /// Worst lag of a generator behind its schedule, ms (large: the generators were the limit).
    #[serde(default)]
    pub max_lag_ms: f64,
}

/// Everything kept about one run: the document behind the JSON, CSV, HTML and HDR exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResults {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub target: String,
    #[serde(default)]
    pub url: String,
    /// `open 2000/s` or `closed 50 users`.
    pub model: String,
    pub generators: u32,
    pub duration_seconds: f64,
    #[serde(default)]
    pub ramp_up_seconds: f64,
    /// The common start (RFC 3339).
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub phase: String,
    pub summary: Summary,
    #[serde(default)]
    pub thresholds: Vec<Verdict>,
    #[serde(default)]
    pub seconds: Vec<SecondRow>,
    #[serde(default)]
    pub resources: Vec<ResourceSample>,
    /// The whole run's histogram (base64 compressed V2).
    #[serde(default)]
    pub histogram: String,
}

impl RunResults {
    /// The incremental form the console polls while a run goes on (`?since=SECOND`): only the
    /// seconds and resource samples from `second` on, and no histograms (the summary and the
    /// verdicts are whole-run as always).
    pub fn since(mut self, second: u32) -> RunResults {
        self.seconds.retain(|s| s.second >= second);
        for s in &mut self.seconds {
            s.histogram.clear();
        }
        self.resources.retain(|r| r.second >= second);
        self.histogram.clear();
        self
    }

    /// [`Self::since`] when a second is given, else the whole document.
    pub fn since_maybe(self, second: Option<u32>) -> RunResults {
        match second {
            Some(second) => self.since(second),
            None => self,
        }
    }
}

#[derive(Debug, Clone)]
struct Merged {
    requests: u64,
    codes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    hist: Hist,
}

/// Adds the generators' seconds together, exactly.
#[derive(Debug, Clone)]
pub struct Merger {
    seconds: BTreeMap<u32, Merged>,
    total: Hist,
    done: BTreeSet<u32>,
    reported: BTreeSet<u32>,
    max_lag_ms: f64,
    /// (generator, second) pairs already merged: a re-sent batch is not counted twice.
    seen: BTreeSet<(u32, u32)>,
}

impl Default for Merger {
    fn default() -> Self {
        Merger {
            seconds: BTreeMap::new(),
            total: new_hist(),
            done: BTreeSet::new(),
            reported: BTreeSet::new(),
            max_lag_ms: 0.0,
            seen: BTreeSet::new(),
        }
    }
}

impl Merger {
    /// Adds a generator's batch.
    pub fn add(&mut self, batch: &ReportBatch) -> Result<(), LoadTestError> {
        self.reported.insert(batch.generator);
        for s in &batch.seconds {
            if !self.seen.insert((batch.generator, s.second)) {
                continue;
            }
            let h = decode(&s.histogram)?;
            let entry = self.seconds.entry(s.second).or_insert_with(|| Merged {
                requests: 0,
                codes: BTreeMap::new(),
                errors: BTreeMap::new(),
                hist: new_hist(),
            });
            entry.requests += s.requests;
            for (k, v) in &s.codes {
                *entry.codes.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &s.errors {
                *entry.errors.entry(k.clone()).or_default() += v;
            }
            entry
                .hist
                .add(&h)
                .map_err(|e| LoadTestError::Report(format!("merging histograms: {e:?}")))?;
            self.total
                .add(&h)
                .map_err(|e| LoadTestError::Report(format!("merging histograms: {e:?}")))?;
            self.max_lag_ms = self.max_lag_ms.max(s.lag_ms);
        }
        if batch.done {
            self.done.insert(batch.generator);
        }
        Ok(())
    }

    /// Generators that said they finished.
    pub fn done(&self) -> usize {
        self.done.len()
    }

    /// Generators that reported at least once.
    pub fn reporting(&self) -> usize {
        self.reported.len()
    }

    /// The merged histogram of the whole run.
    pub fn total(&self) -> &Hist {
        &self.total
    }

    /// Transport errors of kind `kind` so far, and all requests so far.
    pub fn error_kind(&self, kind: &str) -> (u64, u64) {
        let errs = self
            .seconds
            .values()
            .map(|m| m.errors.get(kind).copied().unwrap_or(0))
            .sum();
        (errs, self.seconds.values().map(|m| m.requests).sum())
    }

    /// The per-second rows, oldest first.
    pub fn rows(&self) -> Vec<SecondRow> {
        self.seconds
            .iter()
            .map(|(second, m)| SecondRow {
                second: *second,
                requests: m.requests,
                errors: failed(&m.codes, &m.errors),
                codes: m.codes.clone(),
                error_kinds: m.errors.clone(),
                latency: latency(&m.hist),
                histogram: encode(&m.hist),
            })
            .collect()
    }

    /// Totals; `elapsed` is the send window in seconds the rate is computed over.
    pub fn summary(&self, elapsed: f64, requested_rate: Option<f64>) -> Summary {
        let mut s = Summary {
            requested_rate,
            latency: latency(&self.total),
            max_lag_ms: self.max_lag_ms,
            ..Default::default()
        };
        for m in self.seconds.values() {
            s.requests += m.requests;
            for (k, v) in &m.codes {
                *s.codes.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &m.errors {
                *s.error_kinds.entry(k.clone()).or_default() += v;
            }
        }
        s.errors = failed(&s.codes, &s.error_kinds);
        if s.requests > 0 {
            s.error_rate = s.errors as f64 * 100.0 / s.requests as f64;
        }
        if elapsed > 0.0 {
            s.achieved_rate = s.requests as f64 / elapsed;
        }
        s
    }
}

/// The verdict of each threshold on a summary.
pub fn verdicts(thresholds: &[Threshold], summary: &Summary, total: &Hist) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| {
            let actual = match t.metric {
                Metric::ErrorRate => summary.error_rate,
                Metric::Mean => summary.latency.mean,
                Metric::Quantile(q) if q >= 1.0 => total.max() as f64 / 1e3,
                Metric::Quantile(q) => total.value_at_quantile(q) as f64 / 1e3,
            };
            // a run without answers has no latency to judge: it fails latency thresholds
            let passed = if total.is_empty() && !matches!(t.metric, Metric::ErrorRate) {
                false
            } else {
                t.holds(actual)
            };
            Verdict {
                threshold: t.text.clone(),
                actual,
                passed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn second(gen_samples: &[u64], second: u32) -> SecondReport {
        let mut h = new_hist();
        for v in gen_samples {
            record(&mut h, *v);
        }
        SecondReport {
            second,
            requests: gen_samples.len() as u64,
            codes: BTreeMap::from([("200".to_string(), gen_samples.len() as u64)]),
            errors: BTreeMap::new(),
            histogram: encode(&h),
            lag_ms: 0.0,
        }
    }

    #[test]
    fn merger_three_generators_equals_one_histogram_of_all_samples() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut all = new_hist();
        let mut merger = Merger::default();
        for g in 0..3u32 {
            for s in 0..5u32 {
                // a different latency shape per generator: averaging percentiles would be wrong
                let samples: Vec<u64> = (0..2000)
                    .map(|_| rng.random_range(100..(1000 * (g as u64 + 1) * 50)))
                    .collect();
                for v in &samples {
                    record(&mut all, *v);
                }
                merger
                    .add(&ReportBatch {
                        generator: g,
                        seconds: vec![second(&samples, s)],
                        done: s == 4,
                    })
                    .unwrap();
            }
        }
        assert_eq!(merger.total(), &all);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merger.total().value_at_quantile(q),
                all.value_at_quantile(q)
            );
        }
        assert_eq!(merger.done(), 3);
        let summary = merger.summary(5.0, Some(1200.0));
        assert_eq!(summary.requests, 30_000);
        assert!((summary.achieved_rate - 6000.0).abs() < 1e-9);
    }

    #[test]
    fn merger_resent_second_is_counted_once() {
        let mut merger = Merger::default();
        let batch = ReportBatch {
            generator: 0,
            seconds: vec![second(&[1000, 2000], 0)],
            done: false,
        };
        merger.add(&batch).unwrap();
        merger.add(&batch).unwrap();
        assert_eq!(merger.summary(1.0, None).requests, 2);
        assert_eq!(merger.total().len(), 2);
    }

    #[test]
    fn summary_counts_5xx_and_transport_errors_as_failed() {
        let mut merger = Merger::default();
        let mut s = second(&[1000; 8], 0);
        s.requests = 10;
        s.codes = BTreeMap::from([("200".into(), 6), ("503".into(), 2)]);
        s.errors = BTreeMap::from([("connect".into(), 2)]);
        merger
            .add(&ReportBatch {
                generator: 0,
                seconds: vec![s],
                done: true,
            })
            .unwrap();
        let summary = merger.summary(1.0, None);
        assert_eq!(summary.errors, 4);
        assert!((summary.error_rate - 40.0).abs() < 1e-9);
        let v = verdicts(
            &[
                Threshold::parse("errors<1%").unwrap(),
                Threshold::parse("p99<200ms").unwrap(),
            ],
            &summary,
            merger.total(),
        );
        assert!(!v[0].passed);
        assert!(v[1].passed);
    }

    #[test]
    fn since_keeps_later_seconds_without_histograms() {
        let mut merger = Merger::default();
        for s in 0..4 {
            merger
                .add(&ReportBatch {
                    generator: 0,
                    seconds: vec![second(&[1000, 2000], s)],
                    done: false,
                })
                .unwrap();
        }
        let results = RunResults {
            summary: merger.summary(4.0, None),
            seconds: merger.rows(),
            resources: (0..4)
                .map(|second| ResourceSample {
                    second,
                    ..Default::default()
                })
                .collect(),
            histogram: encode(merger.total()),
            ..Default::default()
        };
        let later = results.clone().since(2);
        assert_eq!(
            later.seconds.iter().map(|s| s.second).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(later.seconds.iter().all(|s| s.histogram.is_empty()));
        assert_eq!(
            later.resources.iter().map(|r| r.second).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(later.histogram.is_empty());
        assert_eq!(later.summary, results.summary);
        assert_eq!(later.seconds[0].latency, results.seconds[2].latency);
    }

    #[test]
    fn encode_decode_roundtrip_keeps_every_count() {
        let mut h = new_hist();
        for v in [1, 10, 100, 1_000, 1_000_000, HIGHEST_US * 2] {
            record(&mut h, v);
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.max(), h.max());
    }
}
