//! LogQL metric queries of the shape Grafana's logs volume and simple dashboards use:
//! `count_over_time`, `rate`, `bytes_over_time`, `bytes_rate` over a log query and a range, optionally
//! inside one `sum`/`count`/`min`/`max`/`avg` with `by (...)` or `without (...)`, evaluated at each step
//! like Loki (a step with no entries yields no point).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::logql::LogQlError;
use crate::{parse_logql, LabelMatcher, LineFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetricQuery {
    pub agg: Option<(AggOp, Grouping)>,
    pub func: RangeFn,
    pub range: Duration,
    pub matchers: Vec<LabelMatcher>,
    pub filters: Vec<LineFilter>,
}

/// Whether a query is a metric query (starts with a function or aggregation name), not a log query.
pub(crate) fn is_metric(q: &str) -> bool {
    let t = q.trim_start();
    !t.starts_with('{') && t.starts_with(|c: char| c.is_ascii_alphabetic())
}

fn err(q: &str, at: usize, msg: impl Into<String>) -> LogQlError {
    LogQlError::at(q, at, msg)
}

/// Index just past the `)` matching the `(` at `open`, skipping quoted strings.
fn matching_paren(q: &str, open: usize) -> Option<usize> {
    let b = q.as_bytes();
    let mut depth = 0i32;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn skip_ws(q: &str, mut i: usize) -> usize {
    while i < q.len() && q.as_bytes()[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn word(q: &str, i: usize) -> &str {
    let end = q[i..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(q.len(), |n| i + n);
    &q[i..end]
}

/// `by (a, b)` / `without (a)` at `i`; returns the grouping and the index after it.
fn grouping(q: &str, i: usize) -> Result<Option<(Grouping, usize)>, LogQlError> {
    let i = skip_ws(q, i);
    let w = word(q, i);
    if w != "by" && w != "without" {
        return Ok(None);
    }
    let open = skip_ws(q, i + w.len());
    if q.as_bytes().get(open) != Some(&b'(') {
        return Err(err(q, open, format!("syntax error: expecting ( after {w}")));
    }
    let close = q[open..]
        .find(')')
        .map(|n| open + n)
        .ok_or_else(|| err(q, open, "syntax error: unclosed label list"))?;
    let mut labels = Vec::new();
    for part in q[open + 1..close].split(',') {
        let l = part.trim();
        if l.is_empty() {
            continue;
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(
                q,
                open + 1,
                format!("syntax error: {l:?} is not a label name"),
            ));
        }
        labels.push(l.to_string());
    }
    let g = if w == "by" {
        Grouping::By(labels)
    } else {
        Grouping::Without(labels)
    };
    Ok(Some((g, close + 1)))
}

/// Parses a supported metric query.
pub(crate) fn parse_metric(q: &str) -> Result<MetricQuery, LogQlError> {
    let mut i = skip_ws(q, 0);
    let w = word(q, i);
    let agg = match w {
        "sum" => Some(AggOp::Sum),
        "count" => Some(AggOp::Count),
        "min" => Some(AggOp::Min),
        "max" => Some(AggOp::Max),
        "avg" => Some(AggOp::Avg),
        _ => None,
    };
    let Some(op) = agg else {
        return parse_range_fn(q, i, q.len());
    };
    i += w.len();
    let mut g = None;
    if let Some((gr, next)) = grouping(q, i)? {
        g = Some(gr);
        i = next;
    }
    i = skip_ws(q, i);
    if q.as_bytes().get(i) != Some(&b'(') {
        return Err(err(q, i, format!("syntax error: expecting ( after {w}")));
    }
    let close = matching_paren(q, i).ok_or_else(|| err(q, i, "syntax error: unclosed ("))?;
    let mut m = parse_range_fn(q, skip_ws(q, i + 1), close - 1)?;
    let mut end = close;
    if let Some((gr, next)) = grouping(q, close)? {
        if g.is_some() {
            return Err(err(q, close, "syntax error: grouping given twice"));
        }
        g = Some(gr);
        end = next;
    }
    m.agg = Some((op, g.unwrap_or(Grouping::By(Vec::new()))));
    let rest = skip_ws(q, end);
    if rest < q.len() {
        return Err(err(
            q,
            rest,
            "syntax error: unexpected input after the expression",
        ));
    }
    Ok(m)
}

/// `fn(<log query> [range])` within `q[start..limit]`.
fn parse_range_fn(q: &str, start: usize, limit: usize) -> Result<MetricQuery, LogQlError> {
    let w = word(q, start);
    let func = match w {
        "count_over_time" => RangeFn::CountOverTime,
        "rate" => RangeFn::Rate,
        "bytes_over_time" => RangeFn::BytesOverTime,
        "bytes_rate" => RangeFn::BytesRate,
        "" => return Err(err(q, start, "syntax error: expecting a function")),
        other => {
            return Err(err(
                q,
                start,
                format!("{other} is not supported: use count_over_time, rate, bytes_over_time or bytes_rate, optionally in sum/count/min/max/avg by (...)"),
            ))
        }
    };
    let open = skip_ws(q, start + w.len());
    if q.as_bytes().get(open) != Some(&b'(') {
        return Err(err(q, open, format!("syntax error: expecting ( after {w}")));
    }
    let close = matching_paren(q, open).ok_or_else(|| err(q, open, "syntax error: unclosed ("))?;
    if close > limit {
        return Err(err(q, open, "syntax error: unbalanced parentheses"));
    }
    let body = &q[open + 1..close - 1];
    let lb = body
        .rfind('[')
        .ok_or_else(|| err(q, close - 1, "syntax error: expecting a range like [1m]"))?;
    let rb = body[lb..]
        .find(']')
        .map(|n| lb + n)
        .ok_or_else(|| err(q, open + 1 + lb, "syntax error: unclosed ["))?;
    if !body[rb + 1..].trim().is_empty() {
        return Err(err(
            q,
            open + 2 + rb,
            "syntax error: unexpected input after the range",
        ));
    }
    let range = crate::loki::parse_duration(body[lb + 1..rb].trim())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| err(q, open + 2 + lb, "syntax error: bad range duration"))?;
    let log = &body[..lb];
    let (matchers, filters) =
        parse_logql(log).map_err(|e| err(q, open + 1 + e.position, e.message))?;
    let rest = skip_ws(q, close);
    if rest < limit {
        return Err(err(
            q,
            rest,
            "syntax error: unexpected input after the expression",
        ));
    }
    Ok(MetricQuery {
        agg: None,
        func,
        range,
        matchers,
        filters,
    })
}

type Labels = BTreeMap<String, String>;
/// A series' value per step (`None`: no entries in that step's window).
type StepValues = Vec<(Labels, Vec<Option<f64>>)>;

/// Evaluation of a parsed metric query at steps `start, start + step, ..., end` from entries
/// `(labels, timestamp, line length)` in `(start - range, end]`.
pub(crate) struct Evaluator {
    q: MetricQuery,
    start: i64,
    step: i64,
    steps: usize,
    /// Per series: per step (count, bytes).
    series: BTreeMap<BTreeMap<String, String>, Vec<(u64, u64)>>,
}

impl Evaluator {
    pub fn new(q: MetricQuery, start: i64, end: i64, step: i64) -> Evaluator {
        let step = step.max(1);
        let steps = ((end - start) / step + 1).max(1) as usize;
        Evaluator {
            q,
            start,
            step,
            steps,
            series: BTreeMap::new(),
        }
    }

    pub fn range_ns(&self) -> i64 {
        self.q.range.as_nanos() as i64
    }

    pub fn matchers(&self) -> &[LabelMatcher] {
        &self.q.matchers
    }

    pub fn filters(&self) -> &[LineFilter] {
        &self.q.filters
    }

    /// Adds one entry: it counts at every step `t` with `t - range < ts <= t`.
    pub fn add(&mut self, labels: &BTreeMap<String, String>, ts: i64, len: usize) {
        let r = self.range_ns();
        // First step index with t >= ts, last with t < ts + r.
        let first = if ts <= self.start {
            0
        } else {
            ((ts - self.start) + self.step - 1) / self.step
        };
        let last_t = ts + r - 1;
        if last_t < self.start {
            return;
        }
        let last = ((last_t - self.start) / self.step).min(self.steps as i64 - 1);
        if first > last {
            return;
        }
        let steps = self.steps;
        let v = self
            .series
            .entry(labels.clone())
            .or_insert_with(|| vec![(0, 0); steps]);
        for k in first..=last {
            let cell = &mut v[k as usize];
            cell.0 += 1;
            cell.1 += len as u64;
        }
    }

    /// `(labels, [(step time ns, value)])` per output series.
    pub fn finish(self) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let secs = self.q.range.as_secs_f64();
        let value = |c: (u64, u64)| match self.q.func {
            RangeFn::CountOverTime => c.0 as f64,
            RangeFn::Rate => c.0 as f64 / secs,
            RangeFn::BytesOverTime => c.1 as f64,
            RangeFn::BytesRate => c.1 as f64 / secs,
        };
        let raw: StepValues = self
            .series
            .iter()
            .map(|(l, v)| {
                (
                    l.clone(),
                    v.iter().map(|c| (c.0 > 0).then(|| value(*c))).collect(),
                )
            })
            .collect();
        let grouped: StepValues = match &self.q.agg {
            None => raw,
            Some((op, g)) => {
                let mut groups: BTreeMap<BTreeMap<String, String>, Vec<Vec<f64>>> = BTreeMap::new();
                for (labels, vals) in raw {
                    let key: BTreeMap<String, String> = match g {
                        Grouping::By(names) => {
                            let keep: BTreeSet<&String> = names.iter().collect();
                            labels
                                .into_iter()
                                .filter(|(k, _)| keep.contains(k))
                                .collect()
                        }
                        Grouping::Without(names) => {
                            let drop: BTreeSet<&String> = names.iter().collect();
                            labels
                                .into_iter()
                                .filter(|(k, _)| !drop.contains(k))
                                .collect()
                        }
                    };
                    let slots = groups
                        .entry(key)
                        .or_insert_with(|| vec![Vec::new(); self.steps]);
                    for (k, v) in vals.into_iter().enumerate() {
                        if let Some(v) = v {
                            slots[k].push(v);
                        }
                    }
                }
                groups
                    .into_iter()
                    .map(|(k, slots)| {
                        let vals = slots
                            .into_iter()
                            .map(|xs| {
                                if xs.is_empty() {
                                    return None;
                                }
                                let n = xs.len() as f64;
                                Some(match op {
                                    AggOp::Sum => xs.iter().sum(),
                                    AggOp::Count => n,
                                    AggOp::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                                    AggOp::Max => {
                                        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                                    }
                                    AggOp::Avg => xs.iter().sum::<f64>() / n,
                                })
                            })
                            .collect();
                        (k, vals)
                    })
                    .collect()
            }
        };
        grouped
            .into_iter()
            .map(|(l, vals)| {
                let pts = vals
                    .into_iter()
                    .enumerate()
                    .filter_map(|(k, v)| v.map(|v| (self.start + k as i64 * self.step, v)))
                    .collect::<Vec<_>>();
                (l, pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_grafana_volume_query_returns_sum_by_count() {
        let m = parse_metric(r#"sum by (level, detected_level) (count_over_time({app="x"} |= "e" | drop __error__[1m]))"#).unwrap();
        assert_eq!(m.func, RangeFn::CountOverTime);
        assert_eq!(m.range, Duration::from_secs(60));
        assert_eq!(
            m.agg,
            Some((
                AggOp::Sum,
                Grouping::By(vec!["level".into(), "detected_level".into()])
            ))
        );
        assert_eq!(m.filters, vec![LineFilter::Contains("e".into())]);
        let m = parse_metric(r#"sum(rate({app="x"}[5m])) without (pod)"#).unwrap();
        assert_eq!(
            m.agg,
            Some((AggOp::Sum, Grouping::Without(vec!["pod".into()])))
        );
        assert_eq!(parse_metric(r#"rate({app="x"}[30s])"#).unwrap().agg, None);
    }

    #[test]
    fn parse_metric_errors_carry_positions() {
        let e = parse_metric(r#"topk(3, rate({app="x"}[1m]))"#).unwrap_err();
        assert_eq!(e.position, 0);
        let e = parse_metric(r#"rate({app="x"})"#).unwrap_err();
        assert!(e.message.contains("range"), "{e}");
        let e = parse_metric(r#"rate({app=="x"}[1m])"#).unwrap_err();
        assert_eq!(e.position, 10, "{e}");
    }

    #[test]
    fn evaluator_counts_entries_per_step_window() {
        let m = parse_metric(r#"sum by (pod) (count_over_time({app="x"}[10s]))"#).unwrap();
        let s = 1_000_000_000i64;
        let mut ev = Evaluator::new(m, 100 * s, 120 * s, 10 * s);
        let a: BTreeMap<String, String> = [
            ("pod".to_string(), "a".to_string()),
            ("c".into(), "1".into()),
        ]
        .into();
        let b: BTreeMap<String, String> = [
            ("pod".to_string(), "a".to_string()),
            ("c".into(), "2".into()),
        ]
        .into();
        ev.add(&a, 95 * s, 10); // window (90, 100]
        ev.add(&b, 100 * s, 10); // (90, 100]
        ev.add(&a, 111 * s, 10); // (110, 120]
        let out = ev.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, [("pod".to_string(), "a".to_string())].into());
        assert_eq!(out[0].1, vec![(100 * s, 2.0), (120 * s, 1.0)]);
    }
}
