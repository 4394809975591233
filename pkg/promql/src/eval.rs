//! The PromQL evaluator: loads each selector's series once for the whole query, then evaluates the
//! expression at every step with Prometheus' semantics (lookback, vector matching, aggregation).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
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
    /// Where the last lookups ended (range start, range end): steps move forward in time, so
    /// the next lookup usually scans a few samples from there instead of searching the series.
    lo: Cursor,
    hi: Cursor,
}

/// A remembered position in a series: `pos` samples have timestamps `<= at`.
struct Cursor {
    pos: Cell<usize>,
    at: Cell<i64>,
}

impl Cursor {
    fn new() -> Cursor {
        Cursor {
            pos: Cell::new(0),
            at: Cell::new(i64::MIN),
        }
    }

    /// The number of samples with timestamps `<= t`.
    fn seek(&self, samples: &[(i64, f64)], t: i64) -> usize {
        let mut p = self.pos.get().min(samples.len());
        if t >= self.at.get() {
            let mut scanned = 0;
            while p < samples.len() && samples[p].0 <= t {
                p += 1;
                scanned += 1;
                if scanned == 16 {
                    p += samples[p..].partition_point(|x| x.0 <= t);
                    break;
                }
            }
        } else {
            p = samples.partition_point(|x| x.0 <= t);
        }
        self.pos.set(p);
        self.at.set(t);
        p
    }
}

/// FNV-1a: a fast hasher for label sets hashed at every step (no untrusted-key concerns here:
/// the keys are the query's own series).
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<Fnv>>;

pub(crate) struct Engine<'a> {
    source: &'a dyn SeriesSource,
    limits: &'a Limits,
    start: i64,
    end: i64,
    deadline: Instant,
    data: HashMap<*const VectorSelector, Vec<Loaded>>,
    /// The labels without `__name__` of every loaded series, by the address of its labels (loaded
    /// labels live as long as the engine, so their addresses are never reused meanwhile).
    unnamed: HashMap<*const Labels, Arc<Labels>>,
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
            _ => {
                return Err(EvalError::Execution(format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                expr.value_type().name()
            )))
            }
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
            unnamed: HashMap::new(),
            series: 0,
            samples: 0,
        }
    }

    pub(crate) fn check_deadline(&self) -> Result<(), EvalError> {
        if Instant::now() >= self.deadline {
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
            Expr::Paren(e) | Expr::Neg(e) | Expr::Plus(e) => self.load(e, lo, hi),
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
        // Series in label order, as Prometheus' storage returns them (ties in topk/bottomk then
        // resolve the same way).
        let mut found = found;
        found.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut loaded = Vec::with_capacity(found.len());
        for mut s in found {
            if !s.samples.is_sorted_by_key(|p| p.0) {
                s.samples.sort_by_key(|p| p.0);
            }
            self.samples += s.samples.len();
            if self.samples > self.limits.max_samples {
                return Err(EvalError::TooManySamples);
            }
            let labels = Arc::new(s.labels);
            self.unnamed
                .insert(Arc::as_ptr(&labels), drop_name(&labels));
            loaded.push(Loaded {
                labels,
                samples: s.samples,
                lo: Cursor::new(),
                hi: Cursor::new(),
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
        let mut out = Vec::new();
        self.for_each_window(vs, range, t, |labels, points| {
            out.push(RangeSeries {
                labels: labels.clone(),
                points: points.to_vec(),
            })
        });
        out
    }

    /// Calls `f` with each series' points in `(t - range, t]` (`t` after `@`/offset), borrowed.
    pub(crate) fn for_each_window(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
        mut f: impl FnMut(&Arc<Labels>, &[(i64, f64)]),
    ) {
        let t = self.selector_time(vs.at, vs.offset_ms, t);
        for s in self.loaded(vs) {
            let hi = s.hi.seek(&s.samples, t);
            let lo = s.lo.seek(&s.samples, t - range).min(hi);
            if lo < hi {
                f(&s.labels, &s.samples[lo..hi]);
            }
        }
    }

    /// Each series' latest sample within the lookback window before `t` (after `@`/offset), with
    /// the sample's own timestamp.
    pub(crate) fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<(Sample, i64)> {
        let tt = self.selector_time(vs.at, vs.offset_ms, t);
        let mut out = Vec::new();
        for s in self.loaded(vs) {
            let idx = s.hi.seek(&s.samples, tt);
            if idx > 0 && s.samples[idx - 1].0 > tt - LOOKBACK_MS {
                let (ts, value) = s.samples[idx - 1];
                out.push((
                    Sample {
                        labels: s.labels.clone(),
                        value,
                    },
                    ts,
                ));
            }
        }
        out
    }

    /// The labels without `__name__`, from the cache for loaded series.
    pub(crate) fn unnamed(&self, labels: &Arc<Labels>) -> Arc<Labels> {
        match self.unnamed.get(&Arc::as_ptr(labels)) {
            Some(l) => l.clone(),
            None => drop_name(labels),
        }
    }

    pub(crate) fn eval(&mut self, expr: &Expr, t: i64) -> Result<QueryValue, EvalError> {
        match expr {
            Expr::Number(v) => Ok(QueryValue::Scalar(*v)),
            Expr::String(s) => Ok(QueryValue::String(s.clone())),
            Expr::Paren(e) | Expr::Plus(e) => self.eval(e, t),
            Expr::Vector(vs) => Ok(QueryValue::Vector(
                self.instant_selector(vs, t)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            )),
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
                let mut points = 0usize;
                while ts <= tt {
                    self.check_deadline()?;
                    if let QueryValue::Vector(samples) = self.eval(expr, ts)? {
                        // The subquery's points are held in memory like loaded samples.
                        points += samples.len();
                        if points + self.samples > self.limits.max_samples {
                            return Err(EvalError::TooManySamples);
                        }
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
                            labels: self.unnamed(&s.labels),
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
    let mut seen = FastSet::with_capacity_and_hasher(samples.len(), Default::default());
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
    // Groups by the hash of their projected labels; equal hashes are told apart by comparing.
    let mut index: FastMap<u64, Vec<usize>> = FastMap::default();
    for s in samples {
        let in_key = |k: &String| {
            if without {
                k != "__name__" && !grouping.contains(k)
            } else {
                grouping.contains(k)
            }
        };
        let extra = label_param
            .as_ref()
            .map(|name| (name, crate::api::format_value(s.value)));
        let projected = || {
            s.labels
                .iter()
                .filter(|(k, _)| in_key(k) && extra.as_ref().is_none_or(|(n, _)| *n != *k))
        };
        let mut h = Fnv::default();
        for (k, v) in projected() {
            h.write(k.as_bytes());
            h.write(&[0xff]);
            h.write(v.as_bytes());
            h.write(&[0xff]);
        }
        if let Some((n, v)) = &extra {
            h.write(n.as_bytes());
            h.write(v.as_bytes());
        }
        let hash = h.finish();
        let candidates = index.entry(hash).or_default();
        let found = candidates.iter().copied().find(|&gi| {
            let g = &groups[gi].labels;
            let mut want = projected()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>();
            if let Some((n, v)) = &extra {
                want.push((n.as_str(), v.as_str()));
                want.sort();
            }
            g.len() == want.len() && g.iter().zip(want).all(|((a, b), (c, d))| a == c && b == d)
        });
        let gi = match found {
            Some(gi) => gi,
            None => {
                let mut key: Labels = projected().map(|(k, v)| (k.clone(), v.clone())).collect();
                if let Some((n, v)) = extra {
                    key.insert(n.clone(), v);
                }
                groups.push(Group {
                    labels: key,
                    value: 0.0,
                    mean: 0.0,
                    count: 0.0,
                    members: Vec::new(),
                });
                candidates.push(groups.len() - 1);
                groups.len() - 1
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySource as MemSource;
    use crate::parse;
    use std::time::Duration;

    /// The result of an instant query as `(labels as text, value)`, in result order.
    fn instant(src: &MemSource, q: &str, t_s: i64) -> Vec<(String, f64)> {
        let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        match instant_query(&e, src, &Limits::default(), t_s * 1000).unwrap() {
            QueryValue::Vector(v) => v
                .into_iter()
                .map(|s| (format_labels(&s.labels), s.value))
                .collect(),
            QueryValue::Scalar(v) => vec![("scalar".to_string(), v)],
            other => panic!("unexpected {other:?}"),
        }
    }

    fn one(src: &MemSource, q: &str, t_s: i64) -> f64 {
        let r = instant(src, q, t_s);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn cpu() -> MemSource {
        let mut s = MemSource::default();
        for (node, mode, v) in [
            ("a", "idle", 1.0),
            ("a", "user", 2.0),
            ("b", "idle", 3.0),
            ("b", "user", 4.0),
        ] {
            s.add(
                &[("__name__", "cpu"), ("node", node), ("mode", mode)],
                &[(0, v)],
            );
        }
        s
    }

    fn counters() -> MemSource {
        let mut s = MemSource::default();
        // 1/s, samples every 10 s from 0 to 60 s.
        s.add(
            &[("__name__", "c_total"), ("pod", "steady")],
            &[
                (0, 0.0),
                (10, 10.0),
                (20, 20.0),
                (30, 30.0),
                (40, 40.0),
                (50, 50.0),
                (60, 60.0),
            ],
        );
        // A reset after 30.
        s.add(
            &[("__name__", "r_total"), ("pod", "reset")],
            &[
                (10, 10.0),
                (20, 20.0),
                (30, 30.0),
                (40, 5.0),
                (50, 15.0),
                (60, 25.0),
            ],
        );
        // A series that starts in the middle of the window.
        s.add(
            &[("__name__", "late_total"), ("pod", "late")],
            &[(30, 100.0), (40, 110.0), (50, 120.0), (60, 130.0)],
        );
        s.add(
            &[("__name__", "g"), ("pod", "gauge")],
            &[
                (10, 5.0),
                (20, 3.0),
                (30, 8.0),
                (40, 1.0),
                (50, 0.0),
                (60, 2.0),
            ],
        );
        s
    }

    #[test]
    fn rate_steady_counter_is_exact() {
        let s = counters();
        // Window (0, 60]: samples 10..60, extrapolated 10 s to the start.
        assert!(close(one(&s, "rate(c_total[1m])", 60), 1.0));
        assert!(close(one(&s, "increase(c_total[1m])", 60), 60.0));
        assert_eq!(
            instant(&s, "rate(c_total[1m])", 60)[0].0,
            "{pod=\"steady\"}"
        );
    }

    #[test]
    fn rate_counter_reset_adds_the_value_before_the_reset() {
        let s = counters();
        // Raw increase 15 + 30 (reset) = 45, extrapolated by 60/50.
        assert!(close(one(&s, "increase(r_total[1m])", 60), 54.0));
        assert!(close(one(&s, "rate(r_total[1m])", 60), 0.9));
    }

    #[test]
    fn rate_series_starting_in_window_extrapolates_half_an_interval() {
        let s = counters();
        // First sample 30 s after the window start (>= 1.1 × 10 s): extrapolate only 5 s.
        assert!(close(one(&s, "increase(late_total[1m])", 60), 35.0));
        assert!(close(one(&s, "rate(late_total[1m])", 60), 35.0 / 60.0));
    }

    #[test]
    fn rate_counter_does_not_extrapolate_below_zero() {
        let mut s = MemSource::default();
        s.add(
            &[("__name__", "z_total")],
            &[(20, 1.0), (30, 11.0), (40, 21.0)],
        );
        // Window (0, 60]: to start 20 s >= 11 → 5 s, zero point 20 × 1/20 = 1 s < 5 s → 1 s; to end
        // 20 s → 5 s. Increase 20 × (20 + 1 + 5) / 20 = 26.
        assert!(close(one(&s, "increase(z_total[1m])", 60), 26.0));
    }

    #[test]
    fn irate_uses_last_two_samples_and_resets() {
        let s = counters();
        assert!(close(one(&s, "irate(c_total[1m])", 60), 1.0));
        let mut r = MemSource::default();
        r.add(&[("__name__", "x")], &[(50, 30.0), (60, 5.0)]);
        assert!(close(one(&r, "irate(x[1m])", 60), 0.5));
        assert!(close(one(&r, "idelta(x[1m])", 60), -25.0));
    }

    #[test]
    fn delta_gauge_extrapolates_without_counter_logic() {
        let s = counters();
        assert!(close(one(&s, "delta(g[1m])", 60), -3.6));
    }

    #[test]
    fn over_time_functions_hand_computed() {
        let s = counters();
        // Window (0, 60] of g: 5 3 8 1 0 2.
        assert!(close(one(&s, "avg_over_time(g[1m])", 60), 19.0 / 6.0));
        assert!(close(one(&s, "max_over_time(g[1m])", 60), 8.0));
        assert!(close(one(&s, "min_over_time(g[1m])", 60), 0.0));
        assert!(close(one(&s, "sum_over_time(g[1m])", 60), 19.0));
        assert!(close(one(&s, "count_over_time(g[1m])", 60), 6.0));
        assert!(close(one(&s, "last_over_time(g[1m])", 60), 2.0));
        assert_eq!(
            instant(&s, "last_over_time(g[1m])", 60)[0].0,
            "{__name__=\"g\", pod=\"gauge\"}"
        );
        assert_eq!(
            instant(&s, "max_over_time(g[1m])", 60)[0].0,
            "{pod=\"gauge\"}"
        );
        // Left-open window: at t=20 the [10s] range holds only the sample at 20.
        assert!(close(one(&s, "count_over_time(g[10s])", 20), 1.0));
    }

    #[test]
    fn time_functions_read_unix_seconds() {
        let mut s = MemSource::default();
        // 2024-02-29T13:45:00Z, a Thursday.
        s.add(&[("__name__", "boot")], &[(0, 1_709_214_300.0)]);
        assert_eq!(one(&s, "year(boot)", 0), 2024.0);
        assert_eq!(one(&s, "month(boot)", 0), 2.0);
        assert_eq!(one(&s, "days_in_month(boot)", 0), 29.0);
        assert_eq!(one(&s, "day_of_month(boot)", 0), 29.0);
        assert_eq!(one(&s, "day_of_week(boot)", 0), 4.0);
        assert_eq!(one(&s, "day_of_year(boot)", 0), 60.0);
        assert_eq!(one(&s, "hour(boot)", 0), 13.0);
        assert_eq!(one(&s, "minute(boot)", 0), 45.0);
        assert_eq!(one(&s, "hour()", 3600 * 5), 5.0);
    }

    #[test]
    fn predict_linear_and_absent_over_time() {
        let s = counters();
        // c_total grows 1/s: 10 minutes after t=60 it is at 660.
        assert!(close(
            one(&s, "predict_linear(c_total[1m], 600)", 60),
            660.0
        ));
        assert!(close(one(&s, "deriv(c_total[1m])", 60), 1.0));
        assert!(instant(&s, "absent_over_time(c_total[1m])", 60).is_empty());
        assert_eq!(
            instant(&s, "absent_over_time(nope{job=\"x\"}[1m])", 60),
            vec![("{job=\"x\"}".to_string(), 1.0)]
        );
    }

    #[test]
    fn selector_lookback_is_five_minutes_and_offset_shifts() {
        let s = counters();
        assert!(close(one(&s, "g", 60), 2.0));
        assert!(close(one(&s, "g", 60 + 299), 2.0));
        assert!(instant(&s, "g", 60 + 300).is_empty());
        assert!(close(one(&s, "g offset 30s", 60), 8.0));
        assert!(close(one(&s, "g offset 25s", 60), 8.0));
        assert!(close(one(&s, "g @ 40", 1000), 1.0));
        assert!(close(one(&s, "timestamp(g)", 65), 60.0));
        assert!(instant(&s, "timestamp(g offset 1m)", 65).is_empty());
        assert!(close(one(&s, "timestamp(g offset 10s)", 65), 50.0));
    }

    #[test]
    fn aggregations_by_and_without() {
        let s = cpu();
        assert_eq!(
            instant(&s, "sum by (node) (cpu)", 0),
            vec![
                ("{node=\"a\"}".to_string(), 3.0),
                ("{node=\"b\"}".to_string(), 7.0)
            ]
        );
        assert_eq!(
            instant(&s, "sum without (mode) (cpu)", 0),
            vec![
                ("{node=\"a\"}".to_string(), 3.0),
                ("{node=\"b\"}".to_string(), 7.0)
            ]
        );
        assert_eq!(
            instant(&s, "avg by (mode) (cpu)", 0),
            vec![
                ("{mode=\"idle\"}".to_string(), 2.0),
                ("{mode=\"user\"}".to_string(), 3.0)
            ]
        );
        assert_eq!(
            instant(&s, "max by (node) (cpu)", 0),
            vec![
                ("{node=\"a\"}".to_string(), 2.0),
                ("{node=\"b\"}".to_string(), 4.0)
            ]
        );
        assert_eq!(one(&s, "min(cpu)", 0), 1.0);
        assert_eq!(one(&s, "count(cpu)", 0), 4.0);
        assert_eq!(one(&s, "quantile(0.5, cpu)", 0), 2.5);
        assert!(close(one(&s, "stddev(cpu)", 0), 1.25f64.sqrt()));
        assert_eq!(instant(&s, "sum(cpu)", 0)[0].0, "{}");
    }

    #[test]
    fn count_values_counts_equal_values_per_group() {
        let s = cpu();
        assert_eq!(
            instant(&s, "count_values(\"v\", round(cpu / 2))", 0),
            vec![
                ("{v=\"1\"}".to_string(), 2.0),
                ("{v=\"2\"}".to_string(), 2.0),
            ]
        );
    }

    #[test]
    fn topk_and_bottomk_keep_labels_and_order() {
        let s = cpu();
        assert_eq!(
            instant(&s, "topk(2, cpu)", 0),
            vec![
                (
                    "{__name__=\"cpu\", mode=\"user\", node=\"b\"}".to_string(),
                    4.0
                ),
                (
                    "{__name__=\"cpu\", mode=\"idle\", node=\"b\"}".to_string(),
                    3.0
                ),
            ]
        );
        assert_eq!(
            instant(&s, "bottomk by (node) (1, cpu)", 0),
            vec![
                (
                    "{__name__=\"cpu\", mode=\"idle\", node=\"a\"}".to_string(),
                    1.0
                ),
                (
                    "{__name__=\"cpu\", mode=\"idle\", node=\"b\"}".to_string(),
                    3.0
                ),
            ]
        );
    }

    fn pods() -> MemSource {
        let mut s = MemSource::default();
        s.add(
            &[("__name__", "mem"), ("node", "n1"), ("pod", "p1")],
            &[(0, 10.0)],
        );
        s.add(
            &[("__name__", "mem"), ("node", "n1"), ("pod", "p2")],
            &[(0, 20.0)],
        );
        s.add(
            &[("__name__", "mem"), ("node", "n2"), ("pod", "p3")],
            &[(0, 30.0)],
        );
        s.add(
            &[("__name__", "info"), ("node", "n1"), ("zone", "z1")],
            &[(0, 1.0)],
        );
        s.add(
            &[("__name__", "info"), ("node", "n2"), ("zone", "z2")],
            &[(0, 2.0)],
        );
        s
    }

    #[test]
    fn binary_group_left_copies_labels_from_one_side() {
        let s = pods();
        assert_eq!(
            instant(&s, "mem + on (node) group_left (zone) info", 0),
            vec![
                ("{node=\"n1\", pod=\"p1\", zone=\"z1\"}".to_string(), 11.0),
                ("{node=\"n1\", pod=\"p2\", zone=\"z1\"}".to_string(), 21.0),
                ("{node=\"n2\", pod=\"p3\", zone=\"z2\"}".to_string(), 32.0),
            ]
        );
        assert_eq!(
            instant(&s, "info * on (node) group_right mem", 0),
            vec![
                ("{node=\"n1\", pod=\"p1\"}".to_string(), 10.0),
                ("{node=\"n1\", pod=\"p2\"}".to_string(), 20.0),
                ("{node=\"n2\", pod=\"p3\"}".to_string(), 60.0),
            ]
        );
    }

    #[test]
    fn binary_one_to_one_with_many_matches_is_an_error() {
        let s = pods();
        let e = parse("mem + on (node) info").unwrap();
        let err = instant_query(&e, &s, &Limits::default(), 0).unwrap_err();
        assert!(
            err.to_string().starts_with("multiple matches for labels"),
            "{err}"
        );
    }

    #[test]
    fn binary_on_one_to_one_keeps_only_on_labels() {
        let s = pods();
        assert_eq!(
            instant(&s, "sum by (node) (mem) / on (node) info", 0),
            vec![
                ("{node=\"n1\"}".to_string(), 30.0),
                ("{node=\"n2\"}".to_string(), 15.0)
            ]
        );
        let c = cpu();
        assert_eq!(
            instant(
                &c,
                "cpu{mode=\"user\"} / ignoring (mode) cpu{mode=\"idle\"}",
                0
            ),
            vec![
                ("{node=\"a\"}".to_string(), 2.0),
                ("{node=\"b\"}".to_string(), 4.0 / 3.0)
            ]
        );
    }

    #[test]
    fn comparisons_filter_or_return_bool() {
        let s = pods();
        assert_eq!(
            instant(&s, "mem > 15", 0),
            vec![
                (
                    "{__name__=\"mem\", node=\"n1\", pod=\"p2\"}".to_string(),
                    20.0
                ),
                (
                    "{__name__=\"mem\", node=\"n2\", pod=\"p3\"}".to_string(),
                    30.0
                ),
            ]
        );
        assert_eq!(
            instant(&s, "mem > bool 15", 0),
            vec![
                ("{node=\"n1\", pod=\"p1\"}".to_string(), 0.0),
                ("{node=\"n1\", pod=\"p2\"}".to_string(), 1.0),
                ("{node=\"n2\", pod=\"p3\"}".to_string(), 1.0),
            ]
        );
        // Scalar on the left of a filter keeps the vector's value.
        assert_eq!(
            instant(&s, "25 < mem", 0),
            vec![(
                "{__name__=\"mem\", node=\"n2\", pod=\"p3\"}".to_string(),
                30.0
            )]
        );
        assert_eq!(one(&s, "2 > bool 1", 0), 1.0);
        assert_eq!(one(&s, "2 ^ 3 ^ 2 - 10 % 4", 0), 510.0);
    }

    #[test]
    fn set_operators_match_on_labels() {
        let s = pods();
        let names =
            |q: &str| -> Vec<String> { instant(&s, q, 0).into_iter().map(|x| x.0).collect() };
        assert_eq!(
            names("mem and on (node) info{zone=\"z2\"}"),
            vec!["{__name__=\"mem\", node=\"n2\", pod=\"p3\"}"]
        );
        assert_eq!(
            names("mem unless on (node) info{zone=\"z2\"}"),
            vec![
                "{__name__=\"mem\", node=\"n1\", pod=\"p1\"}",
                "{__name__=\"mem\", node=\"n1\", pod=\"p2\"}"
            ]
        );
        assert_eq!(names("mem{pod=\"p1\"} or info").len(), 3);
    }

    #[test]
    fn label_replace_and_math_functions() {
        let s = pods();
        assert_eq!(
            instant(
                &s,
                "label_replace(mem{pod=\"p1\"}, \"short\", \"$1\", \"pod\", \"p(.*)\")",
                0
            ),
            vec![(
                "{__name__=\"mem\", node=\"n1\", pod=\"p1\", short=\"1\"}".to_string(),
                10.0
            )]
        );
        // No match: unchanged.
        assert_eq!(
            instant(
                &s,
                "label_replace(mem{pod=\"p1\"}, \"short\", \"$1\", \"pod\", \"x(.*)\")",
                0
            )[0]
            .0,
            "{__name__=\"mem\", node=\"n1\", pod=\"p1\"}"
        );
        assert_eq!(one(&s, "clamp_max(mem{pod=\"p3\"}, 25)", 0), 25.0);
        assert_eq!(one(&s, "clamp_min(mem{pod=\"p1\"}, 15)", 0), 15.0);
        assert_eq!(one(&s, "abs(-mem{pod=\"p1\"})", 0), 10.0);
        assert_eq!(one(&s, "round(mem{pod=\"p1\"} / 3, 0.5)", 0), 3.5);
        assert_eq!(one(&s, "ceil(mem{pod=\"p1\"} / 3)", 0), 4.0);
        assert_eq!(one(&s, "floor(mem{pod=\"p1\"} / 3)", 0), 3.0);
        assert_eq!(one(&s, "scalar(mem{pod=\"p2\"}) * 2", 0), 40.0);
        assert_eq!(one(&s, "time()", 42), 42.0);
        assert_eq!(instant(&s, "vector(1)", 0), vec![("{}".to_string(), 1.0)]);
    }

    #[test]
    fn histogram_quantile_interpolates_within_bucket() {
        let mut s = MemSource::default();
        for (le, v) in [("0.1", 10.0), ("0.5", 30.0), ("1", 40.0), ("+Inf", 40.0)] {
            s.add(&[("__name__", "h_bucket"), ("le", le)], &[(0, v)]);
        }
        // rank 20 in bucket (0.1, 0.5] holding 20 → 0.1 + 0.4 × 10/20.
        assert!(close(one(&s, "histogram_quantile(0.5, h_bucket)", 0), 0.3));
    }

    #[test]
    fn range_query_steps_from_start_and_sorts_series() {
        let s = counters();
        let e = parse("g").unwrap();
        let r = range_query(&e, &s, &Limits::default(), 15_000, 45_000, 15_000).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].points,
            vec![(15_000, 5.0), (30_000, 8.0), (45_000, 1.0)]
        );
        let e = parse("sum_over_time(g[20s:10s])").unwrap();
        let r = range_query(&e, &s, &Limits::default(), 60_000, 60_000, 1000).unwrap();
        // Subquery steps 50 s and 60 s (left-open window (40, 60]).
        assert_eq!(r[0].points, vec![(60_000, 2.0)]);
    }

    #[test]
    fn limits_series_samples_and_time_are_enforced() {
        let s = cpu();
        let e = parse("cpu").unwrap();
        let few_series = Limits {
            max_series: 3,
            ..Limits::default()
        };
        assert_eq!(
            instant_query(&e, &s, &few_series, 0),
            Err(EvalError::TooManySeries(3))
        );
        let few_samples = Limits {
            max_samples: 2,
            ..Limits::default()
        };
        assert_eq!(
            instant_query(&e, &s, &few_samples, 0),
            Err(EvalError::TooManySamples)
        );
        let no_time = Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(instant_query(&e, &s, &no_time, 0), Err(EvalError::Timeout));
        // Subquery points count against the sample limit.
        let e = parse("max_over_time(vector(1)[1h:1s])").unwrap();
        let l = Limits {
            max_samples: 100,
            ..Limits::default()
        };
        assert_eq!(
            instant_query(&e, &s, &l, 3_600_000),
            Err(EvalError::TooManySamples)
        );
        // Range results count against the sample limit too.
        let e = parse("vector(1)").unwrap();
        let l = Limits {
            max_samples: 5,
            ..Limits::default()
        };
        assert_eq!(
            range_query(&e, &s, &l, 0, 10_000, 1000),
            Err(EvalError::TooManySamples)
        );
    }

    #[test]
    fn duplicate_labelsets_after_dropping_names_are_an_error() {
        let mut s = MemSource::default();
        s.add(&[("__name__", "a"), ("x", "1")], &[(0, 1.0)]);
        s.add(&[("__name__", "b"), ("x", "1")], &[(0, 2.0)]);
        let e = parse("{x=\"1\"} * 2").unwrap();
        let err = instant_query(&e, &s, &Limits::default(), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vector cannot contain metrics with the same labelset"
        );
    }
}
