//! Exports of a run's [`RunResults`]: a self-contained HTML report (charts as inline SVG, no
//! script, no external asset: it opens offline), JSON, CSV (one row per second) and the HDR
//! histogram interval log (`HistogramLogProcessor` and the HDR plotter read it).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::results::{decode, ResourceSample, RunResults};
use crate::LoadTestError;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Csv,
    Hdr,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, LoadTestError> {
        match text {
            "html" => Ok(Format::Html),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "hdr" | "hlog" => Ok(Format::Hdr),
            other => Err(LoadTestError::Invalid(format!(
                "format {other:?}: use html, json, csv or hdr"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Hdr => "text/plain; charset=utf-8",
        }
    }
}

/// Renders `results` as `format`.
pub fn render(results: &RunResults, format: Format) -> Result<String, LoadTestError> {
    match format {
        Format::Html => Ok(html(results)),
        Format::Json => {
            serde_json::to_string_pretty(results).map_err(|e| LoadTestError::Report(e.to_string()))
        }
        Format::Csv => Ok(csv(results)),
        Format::Hdr => hdr_log(results),
    }
}

fn sum(sample: Option<&ResourceSample>, pods: bool) -> (f64, u64) {
    let Some(s) = sample else {
        return (0.0, 0);
    };
    let list = if pods { &s.pods } else { &s.nodes };
    (
        list.iter().map(|u| u.cpu_millicores).sum(),
        list.iter().map(|u| u.memory_bytes).sum(),
    )
}

/// One row per second: requests, errors, latency quantiles (ms), and the summed CPU
/// (millicores) and memory (bytes) of the target's pods and their nodes.
pub fn csv(r: &RunResults) -> String {
    let mut out = String::from(
        "second,requests,errors,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,pods_cpu_millicores,pods_memory_bytes,nodes_cpu_millicores,nodes_memory_bytes\n",
    );
    for row in &r.seconds {
        let res = r.resources.iter().find(|s| s.second == row.second);
        let (pc, pm) = sum(res, true);
        let (nc, nm) = sum(res, false);
        let l = &row.latency;
        let _ = writeln!(
            out,
            "{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{},{:.1},{}",
            row.second,
            row.requests,
            row.errors,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean,
            pc,
            pm,
            nc,
            nm
        );
    }
    out
}

/// The HDR interval log: one histogram per second (values in µs, shown in ms).
pub fn hdr_log(r: &RunResults) -> Result<String, LoadTestError> {
    let start = chrono::DateTime::parse_from_rfc3339(&r.start_time)
        .ok()
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_millis(t.timestamp_millis().max(0) as u64))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "mini loadtest {}/{} ({}); values in microseconds",
                r.namespace, r.name, r.uid
            ))
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut serializer)
            .map_err(|e| LoadTestError::Report(format!("writing the HDR log: {e}")))?;
        for row in &r.seconds {
            let h = decode(&row.histogram)?;
            log.write_histogram(
                &h,
                Duration::from_secs(u64::from(row.second)),
                Duration::from_secs(1),
                None,
            )
            .map_err(|e| LoadTestError::Report(format!("writing the HDR log: {e:?}")))?;
        }
    }
    String::from_utf8(buf).map_err(|e| LoadTestError::Report(e.to_string()))
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart: its name, its colour and its `(x, y)` points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart as an inline SVG element.
pub fn line_chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 220.0, 64.0, 28.0, 26.0, 12.0);
    let xs = series.iter().flat_map(|s| s.2.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let x_max = xs.fold(1.0f64, f64::max);
    let y_max = nice(ys.fold(0.0f64, f64::max));
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| top + (1.0 - y / y_max) * (h - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title><text x="{left}" y="16" font-size="13" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end">{v} {unit}</text>"##,
            x2 = w - right,
            tx = left - 4.0,
            ty = y + 3.0,
            v = short(v),
            unit = esc(unit),
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{x}" y="{y}" font-size="10" text-anchor="end">{x_max} s</text><text x="{left}" y="{y}" font-size="10">0 s</text>"#,
        x = w - right,
        y = h - 8.0,
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
        }
        let lx = left + 10.0 + i as f64 * 110.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{ly}" width="10" height="3" fill="{colour}"/><text x="{tx}" y="{ty}" font-size="10">{n}</text>"#,
            ly = h - 22.0,
            tx = lx + 14.0,
            ty = h - 18.0,
            n = esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A round axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn short(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The HTML report: summary, thresholds, and charts of requests/s, latency percentiles,
/// errors, and the CPU and memory of the target's pods and their nodes.
pub fn html(r: &RunResults) -> String {
    let s = &r.summary;
    let x = |sec: u32| f64::from(sec) + 1.0;
    let series = |f: &dyn Fn(&crate::results::SecondRow) -> f64| -> Vec<(f64, f64)> {
        r.seconds
            .iter()
            .map(|row| (x(row.second), f(row)))
            .collect()
    };
    let res = |pods: bool, cpu: bool| -> Vec<(f64, f64)> {
        r.resources
            .iter()
            .map(|smp| {
                let (c, m) = sum(Some(smp), pods);
                (
                    x(smp.second),
                    if cpu { c } else { m as f64 / (1 << 20) as f64 },
                )
            })
            .collect()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Load test {ns}/{name}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}.pass{{color:#1a7f37}}.fail{{color:#cf222e}}svg{{display:block;margin:12px 0}}</style></head><body><h1>Load test {ns}/{name}</h1>"#,
        ns = esc(&r.namespace),
        name = esc(&r.name)
    );
    let requested = s
        .requested_rate
        .map(|v| format!("{v:.1}/s"))
        .unwrap_or_else(|| "-".into());
    let _ = write!(
        out,
        "<table><tr><th>Target</th><td>{}</td></tr><tr><th>URL</th><td>{}</td></tr><tr><th>Model</th><td>{}</td></tr><tr><th>Generators</th><td>{}</td></tr><tr><th>Started</th><td>{}</td></tr><tr><th>Duration</th><td>{:.0} s</td></tr><tr><th>Phase</th><td>{}</td></tr><tr><th>Requests</th><td>{}</td></tr><tr><th>Errors</th><td>{} ({:.3}%)</td></tr><tr><th>Requested rate</th><td>{}</td></tr><tr><th>Achieved rate</th><td>{:.1}/s</td></tr><tr><th>Latency p50 / p90 / p99 / p99.9 / max</th><td>{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms</td></tr></table>",
        esc(&r.target), esc(&r.url), esc(&r.model), r.generators, esc(&r.start_time), r.duration_seconds,
        esc(&r.phase), s.requests, s.errors, s.error_rate, requested, s.achieved_rate,
        s.latency.p50, s.latency.p90, s.latency.p99, s.latency.p999, s.latency.max
    );
    if !r.thresholds.is_empty() {
        out.push_str(
            "<h2>Thresholds</h2><table><tr><th>Threshold</th><th>Actual</th><th>Verdict</th></tr>",
        );
        for v in &r.thresholds {
            let (class, word) = if v.passed {
                ("pass", "passed")
            } else {
                ("fail", "failed")
            };
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td>{:.3}</td><td class="{class}">{word}</td></tr>"#,
                esc(&v.threshold),
                v.actual
            );
        }
        out.push_str("</table>");
    }
    if !s.codes.is_empty() || !s.error_kinds.is_empty() {
        out.push_str("<h2>Answers</h2><table><tr><th>Status or error</th><th>Count</th></tr>");
        for (k, v) in s.codes.iter().chain(s.error_kinds.iter()) {
            let _ = write!(out, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Charts</h2>");
    out.push_str(&line_chart(
        "Requests per second",
        "/s",
        &[("requests", "#0969da", series(&|row| row.requests as f64))],
    ));
    out.push_str(&line_chart(
        "Latency (from the intended send time)",
        "ms",
        &[
            ("p50", "#1a7f37", series(&|row| row.latency.p50)),
            ("p90", "#bf8700", series(&|row| row.latency.p90)),
            ("p99", "#cf222e", series(&|row| row.latency.p99)),
            ("max", "#8250df", series(&|row| row.latency.max)),
        ],
    ));
    out.push_str(&line_chart(
        "Errors per second",
        "/s",
        &[("errors", "#cf222e", series(&|row| row.errors as f64))],
    ));
    if !r.resources.is_empty() {
        out.push_str(&line_chart(
            "CPU",
            "m",
            &[
                ("target pods", "#0969da", res(true, true)),
                ("their nodes", "#bf8700", res(false, true)),
            ],
        ));
        out.push_str(&line_chart(
            "Memory",
            "MiB",
            &[
                ("target pods", "#0969da", res(true, false)),
                ("their nodes", "#bf8700", res(false, false)),
            ],
        ));
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{encode, new_hist, record, SecondRow, Summary, Usage};
    use crate::spec::{Latency, Verdict};

    fn sample() -> RunResults {
        let mut h = new_hist();
        record(&mut h, 1500);
        RunResults {
            namespace: "default".into(),
            name: "web<1>".into(),
            uid: "u1".into(),
            target: "svc/web".into(),
            url: "http://10.43.0.10/".into(),
            model: "open 100/s".into(),
            generators: 2,
            duration_seconds: 2.0,
            start_time: "2026-01-01T00:00:00.000Z".into(),
            phase: "Succeeded".into(),
            summary: Summary {
                requests: 200,
                achieved_rate: 100.0,
                latency: Latency {
                    p99: 1.5,
                    ..Default::default()
                },
                ..Default::default()
            },
            thresholds: vec![Verdict {
                threshold: "p99<200ms".into(),
                actual: 1.5,
                passed: true,
            }],
            seconds: (0..2)
                .map(|s| SecondRow {
                    second: s,
                    requests: 100,
                    errors: 0,
                    latency: Latency {
                        p50: 1.5,
                        ..Default::default()
                    },
                    histogram: encode(&h),
                    ..Default::default()
                })
                .collect(),
            resources: vec![ResourceSample {
                second: 1,
                pods: vec![Usage {
                    name: "web-1".into(),
                    cpu_millicores: 12.5,
                    memory_bytes: 1 << 20,
                }],
                nodes: vec![],
            }],
            histogram: encode(&h),
            ..Default::default()
        }
    }

    #[test]
    fn html_is_self_contained_with_inline_svg_and_escaped_names() {
        let page = html(&sample());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            page.matches("<svg").count() >= 5,
            "requests, latency, errors, cpu, memory"
        );
        assert!(page.contains("web&lt;1&gt;"));
        assert!(!page.contains("web<1>"));
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.contains("passed"));
    }

    #[test]
    fn csv_has_one_row_per_second_with_resources() {
        let text = csv(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("second,requests,errors,p50_ms"));
        assert!(lines[2].starts_with("1,100,0,1.500"));
        assert!(lines[2].contains(",12.5,1048576,"));
    }

    #[test]
    fn hdr_log_has_one_interval_per_second_that_decodes() {
        let text = hdr_log(&sample()).unwrap();
        let intervals: Vec<_> =
            hdrhistogram::serialization::interval_log::IntervalLogIterator::new(text.as_bytes())
                .filter_map(|e| match e {
                    Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) => Some(i),
                    _ => None,
                })
                .collect();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[1].start_timestamp(), Duration::from_secs(1));
    }

    #[test]
    fn json_roundtrips() {
        let r = sample();
        let text = render(&r, Format::Json).unwrap();
        let back: RunResults = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn nice_axis_rounds_up() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(180.0), 200.0);
    }
}
