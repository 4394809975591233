//! The `LoadTest` object's spec and status as serde types, the duration and threshold
//! grammars, and the validation that turns a spec into a checked [`Validated`] plan.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::LoadTestError;

/// The API group of the `LoadTest` kind.
pub const GROUP: &str = "loadtest.mini.dev";
/// Its version.
pub const VERSION: &str = "v1";
/// Its plural (the resource name).
pub const PLURAL: &str = "loadtests";
/// Longest run the server keeps per-second results for (bounds the results file).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most generators one run may ask for.
pub const MAX_GENERATORS: u32 = 64;

/// `spec` of a LoadTest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestSpec {
    /// `svc/NAME[:PORT][/PATH]`, `ingress/NAME[/PATH]` or an `http://` URL.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Requests per second over all generators (open model, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Concurrent users over all generators (closed model); excludes `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u32>,
    /// `60s`, `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generators: Option<u32>,
    /// Per-request timeout (`10s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Open connections per generator (open model); sized from the rate when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// `p99<200ms`, `errors<1%`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<String>,
    /// Set by `mini loadtest cancel`: stop the run now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One threshold and whether the run met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub threshold: String,
    /// The measured value in the threshold's unit (`ms` or `%`).
    pub actual: f64,
    pub passed: bool,
}

/// `status` of a LoadTest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The resolved URL the generators send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The common start instant (RFC 3339, milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default)]
    pub generators: u32,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    /// What was asked for (open model), requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_rate: Option<f64>,
    /// What the generators achieved over the run, requests per second.
    #[serde(default)]
    pub achieved_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<Verdict>,
    /// All thresholds met (absent until the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Generator pods are being created and scheduled.
    Pending,
    /// Generators are sending.
    Running,
    /// The run ended and every threshold held.
    Succeeded,
    /// The run could not run, ended early, or a threshold failed.
    Failed,
    /// `mini loadtest cancel` or a deleted object stopped it.
    Cancelled,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The whole object as the controller and CLI read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadTest {
    #[serde(default)]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub spec: LoadTestSpec,
    #[serde(default)]
    pub status: Option<LoadTestStatus>,
}

impl kube::Resource for LoadTest {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "LoadTest".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// `60s`, `1.5s`, `250ms`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (use e.g. 250ms, 60s, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use us, ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency quantile in 0..=1 (`max` is 1.0).
    Quantile(f64),
    Mean,
    /// The share of failed requests (errors and non-2xx/3xx answers), in percent.
    ErrorRate,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed threshold: `metric op limit`; latency limits in milliseconds, rates in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
}

impl Threshold {
    /// Parses `p99<200ms`, `p99.9 <= 1s`, `max<2s`, `mean<50ms`, `errors<1%`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let bad = |why: &str| {
            format!(
                "threshold {text:?}: {why} (write e.g. p99<200ms, p99.9<=1s, max<2s, errors<1%)"
            )
        };
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| bad("no comparison < <= > >="))?;
        let (name, rest) = compact.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            (Op::Gt, &rest[1..])
        };
        let metric = match name.to_ascii_lowercase().as_str() {
            "max" => Metric::Quantile(1.0),
            "mean" | "avg" => Metric::Mean,
            "errors" | "error_rate" | "error-rate" | "errorrate" => Metric::ErrorRate,
            n => {
                let q = n
                    .strip_prefix('p')
                    .and_then(|q| q.parse::<f64>().ok())
                    .ok_or_else(|| bad(&format!("unknown metric {name:?}")))?;
                if !(0.0..100.0).contains(&q) || q == 0.0 {
                    return Err(bad("a percentile is between p0 and p100 (exclusive)"));
                }
                Metric::Quantile(q / 100.0)
            }
        };
        let limit = match metric {
            Metric::ErrorRate => {
                let v = value
                    .strip_suffix('%')
                    .ok_or_else(|| bad("an error rate is given in percent, e.g. 1%"))?;
                let v: f64 = v.parse().map_err(|_| bad("the limit is not a number"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(bad("an error rate is between 0% and 100%"));
                }
                v
            }
            _ => {
                if !value.ends_with('s') {
                    return Err(bad("a latency limit needs a unit: us, ms or s"));
                }
                let d = parse_duration(value).map_err(|e| bad(&e))?;
                d.as_secs_f64() * 1e3
            }
        };
        if limit.is_nan() {
            return Err(bad("the limit is not a number"));
        }
        Ok(Threshold {
            text: text.trim().to_string(),
            metric,
            op,
            limit,
        })
    }

    /// Whether `actual` (ms or %) meets the threshold.
    pub fn holds(&self, actual: f64) -> bool {
        match self.op {
            Op::Lt => actual < self.limit,
            Op::Le => actual <= self.limit,
            Op::Gt => actual > self.limit,
            Op::Ge => actual >= self.limit,
        }
    }
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// Requests per second (total over all generators).
    Open { rate: f64 },
    /// Concurrent users (total over all generators), each sending the next request when the
    /// previous one is answered.
    Closed { users: u32 },
}

/// A spec that passed validation, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub target: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub model: Model,
    pub duration: Duration,
    pub ramp_up: Duration,
    pub timeout: Duration,
    pub generators: u32,
    pub connections: Option<u32>,
    pub thresholds: Vec<Threshold>,
}

/// Rate when neither `rate` nor `users` is given.
pub const DEFAULT_RATE: u64 = 100;

/// Checks a spec; the error says which field is wrong and how to write it.
pub fn validate(spec: &LoadTestSpec) -> Result<Validated, LoadTestError> {
    let invalid = |m: String| Err(LoadTestError::Invalid(m));
    if spec.target.trim().is_empty() {
        return invalid(
            "spec.target is empty: name a Service (svc/web), an Ingress (ingress/web) or an http:// URL"
                .into(),
        );
    }
    crate::target::Target::parse(&spec.target).map_err(LoadTestError::Invalid)?;
    let method = spec.method.clone().unwrap_or_else(|| "GET".into());
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return invalid(format!("spec.method {method:?} is not an HTTP method"));
    }
    for (k, v) in &spec.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            return invalid(format!("spec.headers: {k:?}: {v:?} is not a valid header"));
        }
    }
    let model = match (spec.rate, spec.users) {
        (Some(_), Some(_)) => {
            return invalid(
                "spec.rate and spec.users exclude each other: a rate is the open model, users the closed one"
                    .into(),
            )
        }
        (Some(0), _) => return invalid("spec.rate must be at least 1 request per second".into()),
        (_, Some(0)) => return invalid("spec.users must be at least 1".into()),
        (Some(r), None) => Model::Open { rate: r as f64 },
        (None, Some(u)) => Model::Closed { users: u },
        (None, None) => Model::Open {
            rate: DEFAULT_RATE as f64,
        },
    };
    let field = |name: &str, v: &Option<String>, default: &str| {
        parse_duration(v.as_deref().unwrap_or(default))
            .map_err(|e| LoadTestError::Invalid(format!("spec.{name}: {e}")))
    };
    let duration = field("duration", &spec.duration, "30s")?;
    let ramp_up = field("rampUp", &spec.ramp_up, "0s")?;
    let timeout = field("timeout", &spec.timeout, "10s")?;
    if duration < Duration::from_secs(1) || duration > MAX_DURATION {
        return invalid(format!(
            "spec.duration {:?} must be from 1s to 1h",
            spec.duration.as_deref().unwrap_or_default()
        ));
    }
    if ramp_up >= duration {
        return invalid("spec.rampUp must be shorter than spec.duration".into());
    }
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(600) {
        return invalid("spec.timeout must be from 1ms to 10m".into());
    }
    let generators = spec.generators.unwrap_or(1);
    if generators == 0 || generators > MAX_GENERATORS {
        return invalid(format!(
            "spec.generators {generators}: use 1 to {MAX_GENERATORS}"
        ));
    }
    if let Model::Closed { users } = model {
        if users < generators {
            return invalid(format!(
                "spec.users {users} is fewer than spec.generators {generators}: every generator needs at least one user"
            ));
        }
    }
    if spec.connections == Some(0) {
        return invalid("spec.connections must be at least 1".into());
    }
    let thresholds = spec
        .thresholds
        .iter()
        .map(|t| {
            Threshold::parse(t).map_err(|e| LoadTestError::Invalid(format!("spec.thresholds: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Validated {
        target: spec.target.trim().to_string(),
        method,
        headers: spec.headers.clone(),
        body: spec.body.clone(),
        model,
        duration,
        ramp_up,
        timeout,
        generators,
        connections: spec.connections,
        thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_p99_ms_parses() {
        let t = Threshold::parse("p99<200ms").unwrap();
        assert_eq!(t.metric, Metric::Quantile(0.99));
        assert_eq!(t.op, Op::Lt);
        assert!((t.limit - 200.0).abs() < 1e-9);
        assert!(t.holds(199.0) && !t.holds(200.0));
    }

    #[test]
    fn threshold_spaces_and_seconds_parse() {
        let t = Threshold::parse(" p99.9 <= 1.5s ").unwrap();
        let Metric::Quantile(q) = t.metric else {
            panic!("quantile")
        };
        assert!((q - 0.999).abs() < 1e-12);
        assert_eq!(t.op, Op::Le);
        assert!((t.limit - 1500.0).abs() < 1e-9);
    }

    #[test]
    fn threshold_error_rate_percent_parses() {
        let t = Threshold::parse("errors<1%").unwrap();
        assert_eq!(t.metric, Metric::ErrorRate);
        assert!((t.limit - 1.0).abs() < 1e-9);
        assert!(Threshold::parse("max<2s").unwrap().metric == Metric::Quantile(1.0));
    }

    #[test]
    fn threshold_invalid_inputs_are_rejected_with_a_hint() {
        for bad in [
            "p99",
            "p99<",
            "p99<200",
            "p99<abcms",
            "p200<1s",
            "latency<1s",
            "errors<1",
            "errors<150%",
        ] {
            let e = Threshold::parse(bad).unwrap_err();
            assert!(e.contains("write e.g."), "{bad}: {e}");
        }
    }

    #[test]
    fn validate_bad_threshold_names_the_field() {
        let spec = LoadTestSpec {
            target: "svc/web".into(),
            thresholds: vec!["p99<fast".into()],
            ..Default::default()
        };
        let e = validate(&spec).unwrap_err().to_string();
        assert!(
            e.contains("spec.thresholds") && e.contains("p99<fast"),
            "{e}"
        );
    }

    #[test]
    fn validate_defaults_are_open_model_at_default_rate() {
        let v = validate(&LoadTestSpec {
            target: "http://10.0.0.1:8080/".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.model, Model::Open { rate: 100.0 });
        assert_eq!(v.duration, Duration::from_secs(30));
        assert_eq!(v.generators, 1);
        assert_eq!(v.method, "GET");
    }

    #[test]
    fn validate_rate_and_users_together_are_rejected() {
        let e = validate(&LoadTestSpec {
            target: "svc/web".into(),
            rate: Some(10),
            users: Some(2),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("exclude each other"));
    }

    #[test]
    fn parse_duration_units_convert() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 weeks").is_err());
    }
}
