//! Label matchers (=, !=, =~, !~ with anchored regexes as Prometheus) and the postings index that maps
//! each label name and value to the sorted ids of the series carrying it.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::labels::Packed;
use crate::TsdbError;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One label matcher; a missing label matches as the empty string (as in Prometheus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Self {
        Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
        }
    }
}

/// A matcher ready to test values (regexes compiled and anchored).
pub(crate) struct Compiled {
    name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl Compiled {
    pub(crate) fn new(m: &Matcher) -> Result<Self, TsdbError> {
        let re = match m.op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{})$", m.value)).map_err(|e| {
                    TsdbError::BadRegex {
                        pattern: m.value.clone(),
                        source: Box::new(e),
                    }
                })?)
            }
            _ => None,
        };
        Ok(Compiled {
            name: m.name.clone(),
            op: m.op,
            value: m.value.clone(),
            re,
        })
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }

    pub(crate) fn matches_labels(&self, labels: &Packed) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// Postings: label name → value → sorted series ids.
#[derive(Default)]
pub(crate) struct Postings {
    map: HashMap<String, BTreeMap<String, Vec<u32>>>,
    series: u32,
}

impl Postings {
    /// Adds a series; ids must be given in increasing order so postings stay sorted.
    pub(crate) fn add(&mut self, id: u32, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.map
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id);
        }
        self.series = self.series.max(id + 1);
    }

    /// Bytes the postings hold (an estimate for stats).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map
            .iter()
            .map(|(k, vals)| {
                k.len()
                    + 48
                    + vals
                        .iter()
                        .map(|(v, ids)| v.len() + 56 + ids.capacity() * 4)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Ids of the series matching every matcher, sorted. `labels_of` gives a series' labels.
    pub(crate) fn select<'a>(
        &self,
        matchers: &[Compiled],
        labels_of: impl Fn(u32) -> &'a Packed,
    ) -> Vec<u32> {
        // Matchers that do not match the empty string restrict the candidates to the union of the
        // postings of the values they match; intersect those, then check every matcher on the labels.
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let mut ids: Vec<u32> = Vec::new();
            if let Some(values) = self.map.get(&m.name) {
                if m.op == MatchOp::Equal {
                    if let Some(p) = values.get(&m.value) {
                        ids.extend_from_slice(p);
                    }
                } else {
                    for (v, p) in values {
                        if m.matches(v) {
                            ids.extend_from_slice(p);
                        }
                    }
                    ids.sort_unstable();
                    ids.dedup();
                }
            }
            candidates = Some(match candidates {
                None => ids,
                Some(c) => intersect(&c, &ids),
            });
        }
        let candidates = candidates.unwrap_or_else(|| (0..self.series).collect());
        candidates
            .into_iter()
            .filter(|&id| {
                let labels = labels_of(id);
                matchers.iter().all(|m| m.matches_labels(labels))
            })
            .collect()
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fixture() -> (Postings, Vec<Packed>) {
        let all = [
            labels(&[
                ("__name__", "cpu_total"),
                ("pod", "web-1"),
                ("namespace", "a"),
            ]),
            labels(&[
                ("__name__", "cpu_total"),
                ("pod", "web-2"),
                ("namespace", "b"),
            ]),
            labels(&[("__name__", "mem"), ("pod", "db-1"), ("namespace", "a")]),
            labels(&[("__name__", "node_load1")]),
        ];
        let mut p = Postings::default();
        for (i, l) in all.iter().enumerate() {
            p.add(i as u32, l);
        }
        (p, all.iter().map(Packed::pack).collect())
    }

    fn run(ms: &[Matcher]) -> Vec<u32> {
        let (p, all) = fixture();
        let compiled: Vec<Compiled> = ms.iter().map(|m| Compiled::new(m).unwrap()).collect();
        p.select(&compiled, |id| &all[id as usize])
    }

    #[test]
    fn index_equal_and_not_equal_select_expected_series() {
        assert_eq!(
            run(&[Matcher::new("__name__", MatchOp::Equal, "cpu_total")]),
            vec![0, 1]
        );
        assert_eq!(
            run(&[
                Matcher::new("__name__", MatchOp::Equal, "cpu_total"),
                Matcher::new("namespace", MatchOp::NotEqual, "a"),
            ]),
            vec![1]
        );
        // A missing label equals "": `namespace=""` selects the node-level series.
        assert_eq!(
            run(&[Matcher::new("namespace", MatchOp::Equal, "")]),
            vec![3]
        );
    }

    #[test]
    fn index_regex_is_anchored() {
        assert_eq!(
            run(&[Matcher::new("pod", MatchOp::Regex, "web")]),
            Vec::<u32>::new()
        );
        assert_eq!(
            run(&[Matcher::new("pod", MatchOp::Regex, "web-.*")]),
            vec![0, 1]
        );
        assert_eq!(
            run(&[Matcher::new("pod", MatchOp::Regex, "web-1|db-1")]),
            vec![0, 2]
        );
    }

    #[test]
    fn index_not_regex_excludes_and_keeps_missing() {
        assert_eq!(
            run(&[Matcher::new("pod", MatchOp::NotRegex, "web-.*")]),
            vec![2, 3]
        );
        assert_eq!(
            run(&[Matcher::new("__name__", MatchOp::NotRegex, ".*_total|mem")]),
            vec![3]
        );
    }

    #[test]
    fn index_bad_regex_is_an_error() {
        assert!(Compiled::new(&Matcher::new("pod", MatchOp::Regex, "(")).is_err());
    }
}
