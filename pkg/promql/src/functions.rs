//! PromQL functions: their signatures (checked by the parser) and their evaluation, with rate,
//! increase and delta extrapolated as Prometheus' `extrapolatedRate` does.

use std::sync::Arc;

use crate::ast::{Expr, ValueType};
use crate::eval::{
    quantile, type_of, valid_label_name, Engine, EvalError, Labels, QueryValue, Sample,
};

/// Argument and result types of a function.
pub(crate) struct Signature {
    pub args: &'static [ValueType],
    /// 0: exactly `args`; otherwise the last type may be left out or repeated, up to `variadic`
    /// times (any number when negative).
    pub variadic: i32,
    pub ret: ValueType,
}

impl Signature {
    pub(crate) fn arg_type(&self, i: usize) -> ValueType {
        self.args[i.min(self.args.len() - 1)]
    }
}

use ValueType::{Matrix as M, Scalar as S, String as Str, Vector as V};

pub(crate) fn signature(name: &str) -> Option<Signature> {
    let sig = |args: &'static [ValueType], variadic: i32, ret: ValueType| Signature {
        args,
        variadic,
        ret,
    };
    Some(match name {
        "rate" | "irate" | "increase" | "delta" | "idelta" | "deriv" | "avg_over_time"
        | "max_over_time" | "min_over_time" | "sum_over_time" | "count_over_time"
        | "last_over_time" | "stddev_over_time" | "stdvar_over_time" | "present_over_time"
        | "changes" | "resets" => sig(&[M], 0, V),
        "quantile_over_time" => sig(&[S, M], 0, V),
        "predict_linear" => sig(&[M, S], 0, V),
        "absent_over_time" => sig(&[M], 0, V),
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sort"
        | "sort_desc" | "timestamp" | "absent" => sig(&[V], 0, V),
        "round" => sig(&[V, S], 1, V),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => sig(&[V], 1, V),
        "clamp" => sig(&[V, S, S], 0, V),
        "clamp_min" | "clamp_max" => sig(&[V, S], 0, V),
        "label_replace" => sig(&[V, Str, Str, Str, Str], 0, V),
        "label_join" => sig(&[V, Str, Str, Str], -1, V),
        "histogram_quantile" => sig(&[S, V], 0, V),
        "time" => sig(&[], 0, S),
        "vector" => sig(&[S], 0, V),
        "scalar" => sig(&[V], 0, S),
        _ => return None,
    })
}

fn arg_scalar(engine: &mut Engine<'_>, e: &Expr, t: i64) -> Result<f64, EvalError> {
    match engine.eval(e, t)? {
        QueryValue::Scalar(v) => Ok(v),
        other => Err(EvalError::Execution(format!(
            "expected scalar, got {}",
            type_of(&other).name()
        ))),
    }
}

fn arg_string(e: &Expr) -> Result<String, EvalError> {
    match e {
        Expr::String(s) => Ok(s.clone()),
        Expr::Paren(inner) => arg_string(inner),
        _ => Err(EvalError::Execution(
            "expected a string literal".to_string(),
        )),
    }
}

fn arg_vector(engine: &mut Engine<'_>, e: &Expr, t: i64) -> Result<Vec<Sample>, EvalError> {
    match engine.eval(e, t)? {
        QueryValue::Vector(v) => Ok(v),
        other => Err(EvalError::Execution(format!(
            "expected instant vector, got {}",
            type_of(&other).name()
        ))),
    }
}

/// Applies `f(points, window_end, range)` to each series of the range vector argument of a
/// `*_over_time`/rate function; selector windows are borrowed, not copied.
fn over_matrix(
    engine: &mut Engine<'_>,
    e: &Expr,
    t: i64,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)], i64, i64) -> Option<f64>,
) -> Result<Vec<Sample>, EvalError> {
    match e {
        Expr::Paren(inner) => over_matrix(engine, inner, t, keep_name, f),
        Expr::Matrix(vs, range) => {
            let engine: &Engine<'_> = engine;
            let end = engine.selector_time(vs.at, vs.offset_ms, t);
            let mut out = Vec::new();
            engine.for_each_window(vs, *range, t, |labels, points| {
                if let Some(value) = f(points, end, *range) {
                    out.push(Sample {
                        labels: if keep_name {
                            labels.clone()
                        } else {
                            engine.unnamed(labels)
                        },
                        value,
                    });
                }
            });
            Ok(out)
        }
        Expr::Subquery {
            range_ms,
            offset_ms,
            at,
            ..
        } => {
            let end = engine.selector_time(*at, *offset_ms, t);
            let QueryValue::Matrix(m) = engine.eval(e, t)? else {
                return Err(EvalError::Execution(
                    "subquery did not yield a range".into(),
                ));
            };
            Ok(m.into_iter()
                .filter_map(|s| {
                    f(&s.points, end, *range_ms).map(|value| Sample {
                        labels: if keep_name {
                            s.labels.clone()
                        } else {
                            engine.unnamed(&s.labels)
                        },
                        value,
                    })
                })
                .collect())
        }
        _ => Err(EvalError::Execution("expected a range vector".to_string())),
    }
}

fn map_values(engine: &Engine<'_>, samples: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    samples
        .into_iter()
        .map(|s| Sample {
            labels: engine.unnamed(&s.labels),
            value: f(s.value),
        })
        .collect()
}

pub(crate) fn call(
    engine: &mut Engine<'_>,
    func: &str,
    args: &[Expr],
    t: i64,
) -> Result<QueryValue, EvalError> {
    let vector = |v: Vec<Sample>| Ok(QueryValue::Vector(v));
    match func {
        "time" => Ok(QueryValue::Scalar(t as f64 / 1000.0)),
        "vector" => {
            let v = arg_scalar(engine, &args[0], t)?;
            vector(vec![Sample {
                labels: Arc::new(Labels::new()),
                value: v,
            }])
        }
        "scalar" => {
            let v = arg_vector(engine, &args[0], t)?;
            Ok(QueryValue::Scalar(if v.len() == 1 {
                v[0].value
            } else {
                f64::NAN
            }))
        }
        "rate" | "increase" | "delta" => {
            let is_counter = func != "delta";
            let is_rate = func == "rate";
            vector(over_matrix(engine, &args[0], t, false, |p, end, range| {
                extrapolated_rate(p, end - range, end, range, is_counter, is_rate)
            })?)
        }
        "irate" | "idelta" => {
            let is_rate = func == "irate";
            vector(over_matrix(engine, &args[0], t, false, |p, _, _| {
                instant_value(p, is_rate)
            })?)
        }
        "predict_linear" => {
            let ahead = arg_scalar(engine, &args[1], t)?;
            vector(over_matrix(engine, &args[0], t, false, |p, _, _| {
                linear_regression(p, t).map(|(slope, intercept)| slope * ahead + intercept)
            })?)
        }
        "absent_over_time" => {
            let present = !over_matrix(engine, &args[0], t, false, |_, _, _| Some(1.0))?.is_empty();
            if present {
                return vector(Vec::new());
            }
            let mut labels = Labels::new();
            let mut inner = &args[0];
            while let Expr::Paren(e) = inner {
                inner = e;
            }
            if let Expr::Matrix(vs, _) = inner {
                for m in &vs.matchers {
                    if m.op == crate::MatchOp::Equal && m.name != "__name__" {
                        labels.insert(m.name.clone(), m.value.clone());
                    }
                }
            }
            vector(vec![Sample {
                labels: Arc::new(labels),
                value: 1.0,
            }])
        }
        "deriv" => vector(over_matrix(engine, &args[0], t, false, |p, _, _| {
            linear_regression(p, p.first().map_or(0, |x| x.0)).map(|(slope, _)| slope)
        })?),
        "avg_over_time" | "max_over_time" | "min_over_time" | "sum_over_time"
        | "count_over_time" | "last_over_time" | "stddev_over_time" | "stdvar_over_time"
        | "present_over_time" | "changes" | "resets" => {
            let keep_name = func == "last_over_time";
            let f: fn(&[(i64, f64)]) -> Option<f64> = match func {
                "avg_over_time" => |p| {
                    let mut mean = 0.0;
                    for (i, &(_, v)) in p.iter().enumerate() {
                        mean += (v - mean) / (i as f64 + 1.0);
                    }
                    Some(mean)
                },
                "max_over_time" => |p| {
                    Some(p.iter().map(|x| x.1).fold(p[0].1, |a, v| {
                        if v > a || a.is_nan() {
                            v
                        } else {
                            a
                        }
                    }))
                },
                "min_over_time" => |p| {
                    Some(p.iter().map(|x| x.1).fold(p[0].1, |a, v| {
                        if v < a || a.is_nan() {
                            v
                        } else {
                            a
                        }
                    }))
                },
                "sum_over_time" => |p| Some(p.iter().map(|x| x.1).sum()),
                "count_over_time" => |p| Some(p.len() as f64),
                "last_over_time" => |p| p.last().map(|x| x.1),
                "present_over_time" => |_| Some(1.0),
                "changes" => |p| Some(p.windows(2).filter(|w| w[1].1 != w[0].1).count() as f64),
                "resets" => |p| Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
                "stdvar_over_time" => |p| Some(variance(p)),
                _ => |p| Some(variance(p).sqrt()),
            };
            vector(over_matrix(engine, &args[0], t, keep_name, |p, _, _| f(p))?)
        }
        "quantile_over_time" => {
            let q = arg_scalar(engine, &args[0], t)?;
            vector(over_matrix(engine, &args[1], t, false, |p, _, _| {
                Some(quantile(q, p.iter().map(|x| x.1).collect()))
            })?)
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" => {
            let v = arg_vector(engine, &args[0], t)?;
            let f: fn(f64) -> f64 = match func {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                _ => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
            };
            vector(map_values(engine, v, f))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            use chrono::{Datelike, Timelike};
            let v = match args.first() {
                Some(a) => arg_vector(engine, a, t)?,
                None => vec![Sample {
                    labels: Arc::new(Labels::new()),
                    value: t as f64 / 1000.0,
                }],
            };
            let part = |x: f64| -> f64 {
                if !x.is_finite() {
                    return f64::NAN;
                }
                let Some(d) = chrono::DateTime::from_timestamp(x as i64, 0) else {
                    return f64::NAN;
                };
                f64::from(match func {
                    "day_of_month" => d.day(),
                    "day_of_week" => d.weekday().num_days_from_sunday(),
                    "day_of_year" => d.ordinal(),
                    "days_in_month" => {
                        let (y, m) = (d.year(), d.month());
                        let next = if m == 12 {
                            chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
                        } else {
                            chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
                        };
                        next.and_then(|n| n.pred_opt()).map_or(0, |l| l.day())
                    }
                    "hour" => d.hour(),
                    "minute" => d.minute(),
                    "month" => d.month(),
                    _ => return f64::from(d.year()),
                })
            };
            vector(map_values(engine, v, part))
        }
        "round" => {
            let v = arg_vector(engine, &args[0], t)?;
            let to = if args.len() > 1 {
                arg_scalar(engine, &args[1], t)?
            } else {
                1.0
            };
            let inv = 1.0 / to;
            vector(map_values(engine, v, |x| (x * inv + 0.5).floor() / inv))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = arg_vector(engine, &args[0], t)?;
            let a = arg_scalar(engine, &args[1], t)?;
            let (lo, hi) = match func {
                "clamp" => (a, arg_scalar(engine, &args[2], t)?),
                "clamp_min" => (a, f64::INFINITY),
                _ => (f64::NEG_INFINITY, a),
            };
            if func == "clamp" && hi < lo {
                return vector(Vec::new());
            }
            vector(map_values(engine, v, |x| {
                if x.is_nan() {
                    x
                } else {
                    x.max(lo).min(hi)
                }
            }))
        }
        "sort" | "sort_desc" => {
            let mut v = arg_vector(engine, &args[0], t)?;
            v.sort_by(|a, b| {
                let o = a.value.total_cmp(&b.value);
                if func == "sort" {
                    o
                } else {
                    o.reverse()
                }
            });
            vector(v)
        }
        "timestamp" => {
            // A selector's samples carry their own timestamps; computed samples are stamped with
            // the evaluation time.
            let stamped: Vec<(Sample, i64)> = match &args[0] {
                Expr::Vector(vs) => engine.instant_selector(vs, t),
                other => arg_vector(engine, other, t)?
                    .into_iter()
                    .map(|s| (s, t))
                    .collect(),
            };
            vector(
                stamped
                    .into_iter()
                    .map(|(s, ts)| Sample {
                        labels: engine.unnamed(&s.labels),
                        value: ts as f64 / 1000.0,
                    })
                    .collect(),
            )
        }
        "absent" => {
            let v = arg_vector(engine, &args[0], t)?;
            if !v.is_empty() {
                return vector(Vec::new());
            }
            let mut labels = Labels::new();
            if let Expr::Vector(vs) = &args[0] {
                for m in &vs.matchers {
                    if m.op == crate::MatchOp::Equal && m.name != "__name__" {
                        labels.insert(m.name.clone(), m.value.clone());
                    }
                }
            }
            vector(vec![Sample {
                labels: Arc::new(labels),
                value: 1.0,
            }])
        }
        "label_replace" => {
            let v = arg_vector(engine, &args[0], t)?;
            let dst = arg_string(&args[1])?;
            let repl = arg_string(&args[2])?;
            let src = arg_string(&args[3])?;
            let re_text = arg_string(&args[4])?;
            let re = crate::anchored_regex(&re_text).map_err(|e| {
                EvalError::Execution(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(EvalError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|s| {
                    let value = s.labels.get(&src).cloned().unwrap_or_default();
                    let Some(caps) = re.captures(&value) else {
                        return s;
                    };
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut labels = (*s.labels).clone();
                    if res.is_empty() {
                        labels.remove(&dst);
                    } else {
                        labels.insert(dst.clone(), res);
                    }
                    Sample {
                        labels: Arc::new(labels),
                        value: s.value,
                    }
                })
                .collect();
            vector(out)
        }
        "label_join" => {
            let v = arg_vector(engine, &args[0], t)?;
            let dst = arg_string(&args[1])?;
            let sep = arg_string(&args[2])?;
            let srcs: Vec<String> = args[3..].iter().map(arg_string).collect::<Result<_, _>>()?;
            if !valid_label_name(&dst) {
                return Err(EvalError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|s| {
                    let joined: Vec<&str> = srcs
                        .iter()
                        .map(|n| s.labels.get(n).map_or("", |v| v.as_str()))
                        .collect();
                    let joined = joined.join(&sep);
                    let mut labels = (*s.labels).clone();
                    if joined.is_empty() {
                        labels.remove(&dst);
                    } else {
                        labels.insert(dst.clone(), joined);
                    }
                    Sample {
                        labels: Arc::new(labels),
                        value: s.value,
                    }
                })
                .collect();
            vector(out)
        }
        "histogram_quantile" => {
            let q = arg_scalar(engine, &args[0], t)?;
            let v = arg_vector(engine, &args[1], t)?;
            vector(histogram_quantile(q, v))
        }
        other => Err(EvalError::Execution(format!("unknown function {other:?}"))),
    }
}

/// Least-squares slope (per second) and the value at `intercept_ms`, as Prometheus'
/// `linearRegression` (a constant series has slope 0); None below two points.
fn linear_regression(p: &[(i64, f64)], intercept_ms: i64) -> Option<(f64, f64)> {
    if p.len() < 2 {
        return None;
    }
    let first = p[0].1;
    if p.iter().all(|x| x.1 == first) {
        if first.is_infinite() {
            return Some((f64::NAN, f64::NAN));
        }
        return Some((0.0, first));
    }
    let n = p.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    for &(ts, v) in p {
        let x = (ts - intercept_ms) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    let cov = sxy - sx * sy / n;
    let var = sxx - sx * sx / n;
    let slope = cov / var;
    Some((slope, sy / n - slope * sx / n))
}

fn variance(p: &[(i64, f64)]) -> f64 {
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, &(_, v)) in p.iter().enumerate() {
        let delta = v - mean;
        mean += delta / (i as f64 + 1.0);
        m2 += delta * (v - mean);
    }
    m2 / p.len() as f64
}

/// rate/increase/delta over the points of one series in the window `(range_start, range_end]`,
/// extrapolated to the window's edges exactly as Prometheus' `extrapolatedRate`.
pub(crate) fn extrapolated_rate(
    points: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let first = points[0];
    let last = points[points.len() - 1];
    let mut result = last.1 - first.1;
    if is_counter {
        let mut last_value = 0.0;
        for &(_, v) in points {
            if v < last_value {
                result += last_value;
            }
            last_value = v;
        }
    }
    let mut duration_to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled_interval = (last.0 - first.0) as f64 / 1000.0;
    let average_between = sampled_interval / (points.len() - 1) as f64;
    let threshold = average_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        // Counters cannot be negative: do not extrapolate below the counter's zero point.
        let duration_to_zero = sampled_interval * (first.1 / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    extrapolate_to += duration_to_start;
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    extrapolate_to += duration_to_end;
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// irate/idelta: from the last two points of the window.
fn instant_value(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let last = points[points.len() - 1];
    let prev = points[points.len() - 2];
    let mut value = if is_rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if is_rate {
        value /= interval as f64 / 1000.0;
    }
    Some(value)
}

/// histogram_quantile over classic buckets (`le` label), as Prometheus' `bucketQuantile`.
fn histogram_quantile(q: f64, samples: Vec<Sample>) -> Vec<Sample> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        let Some(le) = s.labels.get("le").and_then(|v| parse_le(v)) else {
            continue;
        };
        let mut key = (*s.labels).clone();
        key.remove("le");
        key.remove("__name__");
        groups.entry(key).or_default().push((le, s.value));
    }
    groups
        .into_iter()
        .map(|(labels, mut buckets)| Sample {
            labels: Arc::new(labels),
            value: bucket_quantile(q, &mut buckets),
        })
        .collect()
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets[buckets.len() - 1].0 != f64::INFINITY {
        return f64::NAN;
    }
    // Make the counts monotonic, as Prometheus does for slightly inconsistent buckets.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let b = buckets.partition_point(|x| x.1 < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, mut count, mut rank) = (0.0, buckets[b].1, rank);
    let end = buckets[b].0;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
