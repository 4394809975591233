//! The PromQL evaluator: loads each selector's series once for the whole query, then evaluates the
//! expression at every step with Prometheus' semantics (lookback, vector matching, aggregation).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::ast::{AggOp, At, BinOp, Cardinality, Expr, ValueType, VectorMatching, VectorSelector};
use crate::{functions, Limits, SeriesSource};

/// Label set of a series.
pub type Labels = BTreeMap<String, String>;

/// How far back an instant selector looks for a sample (Prometheus' default `--query.lookback-delta`).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Step of a subquery without an explicit one (Prometheus' default evaluation interval).
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60 * 1000;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Arc<Labels>,
    pub value: f64,
}

/// One series of a range vector or a range query result.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    pub points: Vec<(i64, f64)>,
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

/// Why a query could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error("query selects more than {0} series; narrow the selectors or shorten the time range")]
    TooManySeries(usize),
    #[error("query timed out in expression evaluation")]
    Timeout,
    #[error("reading series failed: {0}")]
    Source(String),
    #[error("{0}")]
    Execution(String),
}

struct Loaded {
    labels: Arc<Labels>,
    samples: Vec<(i64, f64)>,
}

pub(crate) struct Engine<'a> {
    source: &'a dyn SeriesSource,
    limits: &'a Limits,
    start: i64,
    end: i64,
    deadline: Instant,
    data: HashMap<*const VectorSelector, Vec<Loaded>>,
    series: usize,
    samples: usize,
}

/// Evaluates `expr` at one instant (`/api/v1/query`).
pub fn instant_query(
    expr: &Expr,
    source: &dyn SeriesSource,
    limits: &Limits,
    time_ms: i64,
) -> Result<QueryValue, EvalError> {
    let mut engine = Engine::new(source, limits, time_ms, time_ms);
    engine.load(expr, time_ms, time_ms)?;
    let v = engine.eval(expr, time_ms)?;
    Ok(match v {
        QueryValue::Vector(mut samples) => {
            if !keeps_order(expr) {
                samples.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            QueryValue::Vector(samples)
        }
        QueryValue::Matrix(mut series) => {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Matrix(series)
        }
        other => other,
    })
}

/// Whether the result order of `expr` is meaningful (sort functions, topk/bottomk).
fn keeps_order(expr: &Expr) -> bool {
    match expr {
        Expr::Paren(e) => keeps_order(e),
        Expr::Call { func, .. } => func == "sort" || func == "sort_desc",
        Expr::Aggregate { op, .. } => matches!(op, AggOp::Topk | AggOp::Bottomk),
        _ => false,
    }
}

/// Evaluates `expr` at `start`, `start + step`, ... up to `end` (`/api/v1/query_range`); the result
/// is sorted by labels. The expression must be a scalar or an instant vector.
pub fn range_query(
    expr: &Expr,
    source: &dyn SeriesSource,
    limits: &Limits,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<RangeSeries>, EvalError> {
    if step_ms <= 0 {
        return Err(EvalError::Execution("step must be positive".to_string()));
    }
    let mut engine = Engine::new(source, limits, start_ms, end_ms);
    engine.load(expr, start_ms, end_ms)?;
    let mut out: BTreeMap<Arc<Labels>, Vec<(i64, f64)>> = BTreeMap::new();
    let mut points = 0usize;
    let mut t = start_ms;
    while t <= end_ms {
        engine.check_deadline()?;
        match engine.eval(expr, t)? {
            QueryValue::Scalar(v) => {
                out.entry(Arc::new(Labels::new())).or_default().push((t, v));
                points += 1;
            }
            QueryValue::Vector(samples) => {
                points += samples.len();
                for s in samples {
                    out.entry(s.labels).or_default().push((t, s.value));
                }
            }
            _ => return Err(EvalError::Execution(format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                expr.value_type().name()
            ))),
        }
        if points + engine.samples > limits.max_samples {
            return Err(EvalError::TooManySamples);
        }
        t += step_ms;
    }
    Ok(out
        .into_iter()
        .map(|(labels, points)| RangeSeries { labels, points })
        .collect())
}

impl<'a> Engine<'a> {
    fn new(source: &'a dyn SeriesSource, limits: &'a Limits, start: i64, end: i64) -> Engine<'a> {
        Engine {
            source,
            limits,
            start,
            end,
            deadline: Instant::now() + limits.timeout,
            data: HashMap::new(),
            series: 0,
            samples: 0,
        }
    }

    pub(crate) fn check_deadline(&self) -> Result<(), EvalError> {
        if Instant::now() > self.deadline {
            return Err(EvalError::Timeout);
        }
        Ok(())
    }

    fn at_range(&self, at: Option<At>, lo: i64, hi: i64) -> (i64, i64) {
        match at {
            Some(At::Time(t)) => (t, t),
            Some(At::Start) => (self.start, self.start),
            Some(At::End) => (self.end, self.end),
            None => (lo, hi),
        }
    }

    /// The evaluation time of a selector evaluated at `t`: its `@` time (or `t`) minus its offset.
    pub(crate) fn selector_time(&self, at: Option<At>, offset_ms: i64, t: i64) -> i64 {
        self.at_range(at, t, t).0 - offset_ms
    }

    /// Loads the series of every selector in `expr`, evaluated at times within `[lo, hi]`.
    fn load(&mut self, expr: &Expr, lo: i64, hi: i64) -> Result<(), EvalError> {
        match expr {
            Expr::Number(_) | Expr::String(_) => Ok(()),
            Expr::Vector(vs) => self.load_selector(vs, LOOKBACK_MS, lo, hi),
            Expr::Matrix(vs, range) => self.load_selector(vs, *range, lo, hi),
            Expr::Subquery {
                expr,
                range_ms,
                offset_ms,
                at,
                ..
            } => {
                let (lo, hi) = self.at_range(*at, lo, hi);
                self.load(expr, lo - offset_ms - range_ms, hi - offset_ms)
            }
            Expr::Paren(e) | Expr::Neg(e) => self.load(e, lo, hi),
            Expr::Binary { lhs, rhs, .. } => {
                self.load(lhs, lo, hi)?;
                self.load(rhs, lo, hi)
            }
            Expr::Call { args, .. } => {
                for a in args {
                    self.load(a, lo, hi)?;
                }
                Ok(())
            }
            Expr::Aggregate { param, expr, .. } => {
                if let Some(p) = param {
                    self.load(p, lo, hi)?;
                }
                self.load(expr, lo, hi)
            }
        }
    }

    fn load_selector(
        &mut self,
        vs: &VectorSelector,
        window: i64,
        lo: i64,
        hi: i64,
    ) -> Result<(), EvalError> {
        self.check_deadline()?;
        let (lo, hi) = self.at_range(vs.at, lo, hi);
        let from = lo - vs.offset_ms - window;
        let to = hi - vs.offset_ms;
        let found = self
            .source
            .select(&vs.matchers, from, to)
            .map_err(EvalError::Source)?;
        self.series += found.len();
        if self.series > self.limits.max_series {
            return Err(EvalError::TooManySeries(self.limits.max_series));
        }
        let mut loaded = Vec::with_capacity(found.len());
        for mut s in found {
            if !s.samples.is_sorted_by_key(|p| p.0) {
                s.samples.sort_by_key(|p| p.0);
            }
            self.samples += s.samples.len();
            if self.samples > self.limits.max_samples {
                return Err(EvalError::TooManySamples);
            }
            loaded.push(Loaded {
                labels: Arc::new(s.labels),
                samples: s.samples,
            });
        }
        self.data.insert(vs as *const VectorSelector, loaded);
        Ok(())
    }

    fn loaded(&self, vs: &VectorSelector) -> &[Loaded] {
        self.data
            .get(&(vs as *const VectorSelector))
            .map_or(&[], |v| v.as_slice())
    }

    /// The points of each series of a range selector in `(t - range, t]` (`t` after `@`/offset).
    pub(crate) fn matrix(&self, vs: &VectorSelector, range: i64, t: i64) -> Vec<RangeSeries> {
        let t = self.selector_time(vs.at, vs.offset_ms, t);
        let mut out = Vec::new();
        for s in self.loaded(vs) {
            let hi = s.samples.partition_point(|p| p.0 <= t);
            let lo = s.samples[..hi].partition_point(|p| p.0 <= t - range);
            if lo < hi {
                out.push(RangeSeries {
                    labels: s.labels.clone(),
                    points: s.samples[lo..hi].to_vec(),
                });
            }
        }
        out
    }

    pub(crate) fn eval(&mut self, expr: &Expr, t: i64) -> Result<QueryValue, EvalError> {
        match expr {
            Expr::Number(v) => Ok(QueryValue::Scalar(*v)),
            Expr::String(s) => Ok(QueryValue::String(s.clone())),
            Expr::Paren(e) => self.eval(e, t),
            Expr::Vector(vs) => {
                let tt = self.selector_time(vs.at, vs.offset_ms, t);
                let mut out = Vec::new();
                for s in self.loaded(vs) {
                    let idx = s.samples.partition_point(|p| p.0 <= tt);
                    if idx > 0 && s.samples[idx - 1].0 > tt - LOOKBACK_MS {
                        out.push(Sample {
                            labels: s.labels.clone(),
                            value: s.samples[idx - 1].1,
                        });
                    }
                }
                Ok(QueryValue::Vector(out))
            }
            Expr::Matrix(vs, range) => Ok(QueryValue::Matrix(self.matrix(vs, *range, t))),
            Expr::Subquery {
                expr,
                range_ms,
                step_ms,
                offset_ms,
                at,
            } => {
                let tt = self.selector_time(*at, *offset_ms, t);
                let step = step_ms.unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
                let lo = tt - range_ms;
                let mut ts = lo.div_euclid(step) * step;
                if ts <= lo {
                    ts += step;
                }
                let mut acc: BTreeMap<Arc<Labels>, Vec<(i64, f64)>> = BTreeMap::new();
                while ts <= tt {
                    self.check_deadline()?;
                    if let QueryValue::Vector(samples) = self.eval(expr, ts)? {
                        for s in samples {
                            acc.entry(s.labels).or_default().push((ts, s.value));
                        }
                    }
                    ts += step;
                }
                Ok(QueryValue::Matrix(
                    acc.into_iter()
                        .map(|(labels, points)| RangeSeries { labels, points })
                        .collect(),
                ))
            }
            Expr::Neg(e) => Ok(match self.eval(e, t)? {
                QueryValue::Scalar(v) => QueryValue::Scalar(-v),
                QueryValue::Vector(samples) => {
                    let out: Vec<Sample> = samples
                        .into_iter()
                        .map(|s| Sample {
                            labels: drop_name(&s.labels),
                            value: -s.value,
                        })
                        .collect();
                    check_unique(&out)?;
                    QueryValue::Vector(out)
                }
                other => other,
            }),
            Expr::Call { func, args } => {
                let v = functions::call(self, func, args, t)?;
                if let QueryValue::Vector(samples) = &v {
                    check_unique(samples)?;
                }
                Ok(v)
            }
            Expr::Aggregate {
                op,
                param,
                expr,
                without,
                grouping,
            } => {
                let param = match param {
                    Some(p) => Some(self.eval(p, t)?),
                    None => None,
                };
                let QueryValue::Vector(samples) = self.eval(expr, t)? else {
                    return Err(EvalError::Execution(
                        "aggregation over a non-vector".to_string(),
                    ));
                };
                aggregate(*op, param, samples, *without, grouping).map(QueryValue::Vector)
            }
            Expr::Binary {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                let l = self.eval(lhs, t)?;
                let r = self.eval(rhs, t)?;
                binary(*op, l, r, *return_bool, matching.as_ref())
            }
        }
    }
}

/// The labels without `__name__` (shared when there is none).
pub(crate) fn drop_name(labels: &Arc<Labels>) -> Arc<Labels> {
    if labels.contains_key("__name__") {
        let mut l = (**labels).clone();
        l.remove("__name__");
        Arc::new(l)
    } else {
        labels.clone()
    }
}

fn check_unique(samples: &[Sample]) -> Result<(), EvalError> {
    if samples.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(samples.len());
    for s in samples {
        if !seen.insert(&*s.labels) {
            return Err(EvalError::Execution(
                "vector cannot contain metrics with the same labelset".to_string(),
            ));
        }
    }
    Ok(())
}

fn format_labels(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Applies an arithmetic or comparison operator: the value and whether a comparison holds.
fn apply(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eql => (l, l == r),
        BinOp::Neq => (l, l != r),
        BinOp::Gtr => (l, l > r),
        BinOp::Lss => (l, l < r),
        BinOp::Gte => (l, l >= r),
        BinOp::Lte => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (f64::NAN, false),
    }
}

fn binary(
    op: BinOp,
    l: QueryValue,
    r: QueryValue,
    return_bool: bool,
    matching: Option<&VectorMatching>,
) -> Result<QueryValue, EvalError> {
    match (l, r) {
        (QueryValue::Scalar(a), QueryValue::Scalar(b)) => {
            let (v, keep) = apply(op, a, b);
            Ok(QueryValue::Scalar(if op.is_comparison() {
                if keep {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            }))
        }
        (QueryValue::Vector(v), QueryValue::Scalar(s)) => {
            vector_scalar(op, v, s, false, return_bool).map(QueryValue::Vector)
        }
        (QueryValue::Scalar(s), QueryValue::Vector(v)) => {
            vector_scalar(op, v, s, true, return_bool).map(QueryValue::Vector)
        }
        (QueryValue::Vector(a), QueryValue::Vector(b)) => {
            let default = VectorMatching {
                card: if op.is_set() {
                    Cardinality::ManyToMany
                } else {
                    Cardinality::OneToOne
                },
                on: false,
                labels: Vec::new(),
                include: Vec::new(),
            };
            let m = matching.unwrap_or(&default);
            let out = match op {
                BinOp::And | BinOp::Or | BinOp::Unless => set_op(op, a, b, m),
                _ => vector_vector(op, a, b, m, return_bool)?,
            };
            Ok(QueryValue::Vector(out))
        }
        _ => Err(EvalError::Execution(
            "binary expression must contain only scalar and instant vector types".to_string(),
        )),
    }
}

fn vector_scalar(
    op: BinOp,
    v: Vec<Sample>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let mut out = Vec::with_capacity(v.len());
    for sample in v {
        let (l, r) = if swap {
            (s, sample.value)
        } else {
            (sample.value, s)
        };
        let (mut value, mut keep) = apply(op, l, r);
        if op.is_comparison() && swap {
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if !op.is_comparison() || return_bool {
                drop_name(&sample.labels)
            } else {
                sample.labels
            };
            out.push(Sample { labels, value });
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// The matching key of a series under `on`/`ignoring`.
fn signature(labels: &Labels, m: &VectorMatching) -> String {
    let mut key = String::new();
    if m.on {
        let mut names: Vec<&String> = m.labels.iter().collect();
        names.sort();
        for n in names {
            key.push_str(n);
            key.push('\u{ff}');
            key.push_str(labels.get(n).map_or("", |v| v.as_str()));
            key.push('\u{ff}');
        }
    } else {
        for (k, v) in labels {
            if k == "__name__" || m.labels.contains(k) {
                continue;
            }
            key.push_str(k);
            key.push('\u{ff}');
            key.push_str(v);
            key.push('\u{ff}');
        }
    }
    key
}

fn set_op(op: BinOp, lhs: Vec<Sample>, rhs: Vec<Sample>, m: &VectorMatching) -> Vec<Sample> {
    match op {
        BinOp::And => {
            let right: HashSet<String> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            lhs.into_iter()
                .filter(|s| right.contains(&signature(&s.labels, m)))
                .collect()
        }
        BinOp::Unless => {
            let right: HashSet<String> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
            lhs.into_iter()
                .filter(|s| !right.contains(&signature(&s.labels, m)))
                .collect()
        }
        _ => {
            let left: HashSet<String> = lhs.iter().map(|s| signature(&s.labels, m)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, m))),
            );
            out
        }
    }
}

fn vector_vector(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &VectorMatching,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let swap = m.card == Cardinality::OneToMany;
    let (many, one) = if swap { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_side: HashMap<String, &Sample> = HashMap::with_capacity(one.len());
    for s in &one {
        let sig = signature(&s.labels, m);
        if let Some(prev) = one_side.insert(sig, s) {
            let side = if swap { "left" } else { "right" };
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                format_labels(&prev.labels),
                format_labels(&s.labels)
            )));
        }
    }
    let mut matched: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for ls in &many {
        let sig = signature(&ls.labels, m);
        let Some(rs) = one_side.get(&sig) else {
            continue;
        };
        let (vl, vr) = if swap {
            (rs.value, ls.value)
        } else {
            (ls.value, rs.value)
        };
        let (mut value, mut keep) = apply(op, vl, vr);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        if m.card == Cardinality::OneToOne && !matched.insert(sig) {
            return Err(EvalError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .to_string(),
            ));
        }
        let mut labels = (*ls.labels).clone();
        if !op.is_comparison() || return_bool {
            labels.remove("__name__");
        }
        if m.card == Cardinality::OneToOne {
            if m.on {
                labels.retain(|k, _| m.labels.contains(k));
            } else {
                labels.retain(|k, _| !m.labels.contains(k));
            }
        }
        for name in &m.include {
            match rs.labels.get(name) {
                Some(v) if !v.is_empty() => {
                    labels.insert(name.clone(), v.clone());
                }
                _ => {
                    labels.remove(name);
                }
            }
        }
        out.push(Sample {
            labels: Arc::new(labels),
            value,
        });
    }
    check_unique(&out).map_err(|_| {
        EvalError::Execution(
            "multiple matches for labels: grouping labels must ensure unique matches".to_string(),
        )
    })?;
    Ok(out)
}

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    members: Vec<Sample>,
}

fn aggregate(
    op: AggOp,
    param: Option<QueryValue>,
    samples: Vec<Sample>,
    without: bool,
    grouping: &[String],
) -> Result<Vec<Sample>, EvalError> {
    let scalar = match &param {
        Some(QueryValue::Scalar(v)) => Some(*v),
        _ => None,
    };
    let label_param = match &param {
        Some(QueryValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if let Some(name) = &label_param {
        if !valid_label_name(name) {
            return Err(EvalError::Execution(format!("invalid label name {name:?}")));
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in samples {
        let mut key: Labels = if without {
            s.labels
                .iter()
                .filter(|(k, _)| *k != "__name__" && !grouping.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            s.labels
                .iter()
                .filter(|(k, _)| grouping.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if let Some(name) = &label_param {
            key.insert(name.clone(), crate::api::format_value(s.value));
        }
        let gi = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(Group {
                labels: key,
                value: 0.0,
                mean: 0.0,
                count: 0.0,
                members: Vec::new(),
            });
            groups.len() - 1
        });
        let g = &mut groups[gi];
        let v = s.value;
        g.count += 1.0;
        match op {
            AggOp::Sum => g.value += v,
            AggOp::Avg => g.mean += (v - g.mean) / g.count,
            AggOp::Min => {
                if g.count == 1.0 || v < g.value || g.value.is_nan() {
                    g.value = v
                }
            }
            AggOp::Max => {
                if g.count == 1.0 || v > g.value || g.value.is_nan() {
                    g.value = v
                }
            }
            AggOp::Count | AggOp::CountValues => g.value += 1.0,
            AggOp::Group => g.value = 1.0,
            AggOp::Stddev | AggOp::Stdvar => {
                let delta = v - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (v - g.mean);
            }
            AggOp::Topk | AggOp::Bottomk | AggOp::Quantile => g.members.push(s),
        }
    }
    let mut out = Vec::new();
    for g in groups {
        match op {
            AggOp::Topk | AggOp::Bottomk => {
                let k = scalar.unwrap_or(0.0);
                if k < 1.0 || k.is_nan() {
                    continue;
                }
                let k = if k >= g.members.len() as f64 {
                    g.members.len()
                } else {
                    k as usize
                };
                let mut members = g.members;
                // NaN sorts last for both directions (Prometheus never prefers NaN).
                members.sort_by(|a, b| {
                    let (x, y) = (a.value, b.value);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if op == AggOp::Topk => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
                out.extend(members.into_iter().take(k));
            }
            AggOp::Quantile => {
                let values: Vec<f64> = g.members.iter().map(|s| s.value).collect();
                out.push(Sample {
                    labels: Arc::new(g.labels),
                    value: quantile(scalar.unwrap_or(f64::NAN), values),
                });
            }
            _ => {
                let value = match op {
                    AggOp::Avg => g.mean,
                    AggOp::Stddev => (g.value / g.count).sqrt(),
                    AggOp::Stdvar => g.value / g.count,
                    _ => g.value,
                };
                out.push(Sample {
                    labels: Arc::new(g.labels),
                    value,
                });
            }
        }
    }
    Ok(out)
}

/// The φ-quantile of `values` as Prometheus computes it (linear interpolation between ranks).
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Whether `name` is a valid Prometheus label name.
pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The type of a value (for messages).
pub(crate) fn type_of(v: &QueryValue) -> ValueType {
    match v {
        QueryValue::Scalar(_) => ValueType::Scalar,
        QueryValue::String(_) => ValueType::String,
        QueryValue::Vector(_) => ValueType::Vector,
        QueryValue::Matrix(_) => ValueType::Matrix,
    }
}
