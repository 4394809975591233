//! An in-memory [`SeriesSource`]: series held in a vector, filtered by matchers and time. Used by the
//! unit tests, the bench and the conformance comparison, and usable for small fixed data sets.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Matcher, Series, SeriesSource};

/// Series held in memory; `select` filters by matchers and time like a store does.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    pub series: Vec<Series>,
}

impl MemorySource {
    /// Adds a series from label pairs and points `(unix seconds, value)`.
    pub fn add(&mut self, labels: &[(&str, &str)], points: &[(i64, f64)]) -> &mut Self {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.push(Series {
            labels,
            samples: points.iter().map(|&(s, v)| (s * 1000, v)).collect(),
        });
        self
    }

    fn matching<'a>(&'a self, matchers: &'a [Matcher]) -> impl Iterator<Item = &'a Series> + 'a {
        // Compile each regex once per call, not once per series.
        let compiled: Vec<(&Matcher, Option<regex::Regex>)> = matchers
            .iter()
            .map(|m| {
                let re = match m.op {
                    crate::MatchOp::Regex | crate::MatchOp::NotRegex => {
                        crate::anchored_regex(&m.value).ok()
                    }
                    _ => None,
                };
                (m, re)
            })
            .collect();
        self.series.iter().filter(move |s| {
            compiled.iter().all(|(m, re)| {
                let v = s.labels.get(&m.name).map_or("", |v| v.as_str());
                match (m.op, re) {
                    (crate::MatchOp::Regex, Some(re)) => re.is_match(v),
                    (crate::MatchOp::NotRegex, Some(re)) => !re.is_match(v),
                    _ => m.matches(v),
                }
            })
        })
    }
}

impl SeriesSource for MemorySource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, String> {
        Ok(self
            .matching(matchers)
            .map(|s| {
                let lo = s.samples.partition_point(|p| p.0 < start_ms);
                let hi = s.samples.partition_point(|p| p.0 <= end_ms);
                Series {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi.max(lo)].to_vec(),
                }
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        _start_ms: i64,
        _end_ms: i64,
    ) -> Result<Vec<String>, String> {
        let names: BTreeSet<String> = self
            .matching(matchers)
            .flat_map(|s| s.labels.keys().cloned())
            .collect();
        Ok(names.into_iter().collect())
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        _start_ms: i64,
        _end_ms: i64,
    ) -> Result<Vec<String>, String> {
        let values: BTreeSet<String> = self
            .matching(matchers)
            .filter_map(|s| s.labels.get(name).cloned())
            .collect();
        Ok(values.into_iter().collect())
    }
}
