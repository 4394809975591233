//! An in-memory [`SeriesSource`] for the unit tests of the evaluator and the API.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Matcher, Series, SeriesSource};

/// Series held in memory; `select` filters by matchers and time like a real store.
#[derive(Debug, Default)]
pub(crate) struct MemSource {
    pub series: Vec<Series>,
}

impl MemSource {
    /// Adds a series from `name{k="v",...}`-like pairs and points `(seconds, value)`.
    pub(crate) fn add(&mut self, labels: &[(&str, &str)], points: &[(i64, f64)]) -> &mut Self {
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
        self.series.iter().filter(move |s| {
            matchers
                .iter()
                .all(|m| m.matches(s.labels.get(&m.name).map_or("", |v| v.as_str())))
        })
    }
}

impl SeriesSource for MemSource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, String> {
        Ok(self
            .matching(matchers)
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|p| p.0 >= start_ms && p.0 <= end_ms)
                    .collect(),
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
