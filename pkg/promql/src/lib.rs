//! PromQL for mini: a parser with error positions, an evaluator over any [`SeriesSource`] with
//! Prometheus' semantics (5 m lookback, extrapolated rate/increase, step evaluation), and the answers of
//! the Prometheus HTTP API (`/api/v1/...`) as JSON, framework-agnostic (the caller mounts them).

pub mod api;
pub mod ast;
pub mod eval;
mod functions;
mod lexer;
pub mod memory;
pub mod parser;

use std::collections::BTreeMap;
use std::time::Duration;

pub use api::{api, api_with_info, request_params, ServerInfo};
pub use ast::Expr;
pub use eval::{instant_query, range_query, EvalError, QueryValue, RangeSeries, Sample};
pub use memory::MemorySource;
pub use parser::{parse, ParseError};

/// Where the evaluator reads series from (mini's TSDB in the server, an in-memory table in tests).
/// Errors are plain messages; the API reports them as `internal` errors (HTTP 500).
pub trait SeriesSource: Send + Sync {
    /// Series matching all matchers, with their points (sorted by time) in `[start_ms, end_ms]`.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, String>;
    /// Label names of the series matching all matchers (all series when empty) in the time range.
    fn label_names(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, String>;
    /// Values of label `name` among the series matching all matchers in the time range.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, String>;
}

/// One label matcher of a selector; regexes are anchored (`^(?:value)$`) as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

/// How a [`Matcher`] compares the label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One series as the source returns it: its labels (the metric name is `__name__`) and its points
/// `(unix ms, value)` sorted by time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

/// Bounds of one query: series selected, samples loaded (and points returned) and wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_series: usize,
    pub max_samples: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    /// Prometheus' defaults for samples (`--query.max-samples`) and time (`--query.timeout`); a series
    /// cap Prometheus does not have, so one query cannot pull the whole store.
    fn default() -> Self {
        Limits {
            max_series: 100_000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

impl Matcher {
    /// A matcher; `value` is kept as written (regexes are anchored when compiled).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
        }
    }

    /// Whether `value` (empty when the label is absent) satisfies this matcher. Regexes that do not
    /// compile match nothing (the parser rejects them before they get here).
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Regex => anchored_regex(&self.value).is_ok_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !anchored_regex(&self.value).is_ok_and(|r| r.is_match(value)),
        }
    }
}

/// Compiles a label regex anchored at both ends, as Prometheus does.
pub fn anchored_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?s:{re})$"))
}
