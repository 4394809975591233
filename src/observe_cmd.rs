//! `mini logs search` and the server's `--metrics-*` / `--logs-*` retention flags: clap types
//! and the mapping onto `mini_observe`.

use std::path::PathBuf;
use std::time::Duration;

use crate::token_cmd::parse_ttl;

/// How long and how much the server keeps of the nodes' figures and container logs.
#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    /// Keep raw 10-second samples this long.
    #[arg(long, env = "MINI_METRICS_RETENTION", default_value = "3d", value_parser = parse_ttl)]
    pub metrics_retention: Duration,
    /// Keep 1-minute averages this long.
    #[arg(long, env = "MINI_METRICS_MINUTE_RETENTION", default_value = "14d", value_parser = parse_ttl)]
    pub metrics_minute_retention: Duration,
    /// Keep 1-hour averages this long.
    #[arg(long, env = "MINI_METRICS_HOUR_RETENTION", default_value = "365d", value_parser = parse_ttl)]
    pub metrics_hour_retention: Duration,
    /// Hard cap of the metrics store on disk (e.g. 512Mi, 2Gi); the oldest data goes first.
    #[arg(long, env = "MINI_METRICS_MAX_SIZE", value_parser = parse_size)]
    pub metrics_max_size: Option<u64>,
    /// Keep container logs this long.
    #[arg(long, env = "MINI_LOGS_RETENTION", default_value = "7d", value_parser = parse_ttl)]
    pub logs_retention: Duration,
    /// Cap of the log store on disk (e.g. 10Gi); the oldest logs go first.
    #[arg(long, env = "MINI_LOGS_MAX_SIZE", value_parser = parse_size)]
    pub logs_max_size: Option<u64>,
}

/// A size such as `512Mi`, `2Gi`, `1G` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 512Mi or 2Gi)"))?;
    let factor: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        "T" => 1_000_000_000_000,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use Ki, Mi, Gi, Ti or K, M, G, T)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The stores' retention from the server's flags.
pub fn retention(args: &ObserveArgs) -> mini_observe::Retention {
    let defaults = mini_observe::Retention::default();
    mini_observe::Retention {
        metrics_raw: args.metrics_retention,
        metrics_minute: args.metrics_minute_retention,
        metrics_hour: args.metrics_hour_retention,
        metrics_max_bytes: args.metrics_max_size.unwrap_or(defaults.metrics_max_bytes),
        logs: args.logs_retention,
        logs_max_bytes: args.logs_max_size.unwrap_or(defaults.logs_max_bytes),
    }
}

/// The cluster's stored container logs.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Search every container's logs kept by the server (also of pods and nodes that are gone):
    /// `mini logs search -n web -l app=shop --grep "timeout" --since 2h`.
    Search(LogsSearchArgs),
}

#[derive(Debug, clap::Args)]
pub struct LogsSearchArgs {
    /// A LogQL selector with line filters (`{namespace="web", pod=~"shop-.*"} |= "error"`);
    /// combined with the options below.
    pub query: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Pod name (a regular expression when it contains `*`, `.` or `|`).
    #[arg(short = 'p', long)]
    pub pod: Option<String>,
    /// Container name.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Node name.
    #[arg(long)]
    pub node: Option<String>,
    /// Pod label `key=value`; repeatable.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Only lines containing this text; repeatable (all must match).
    #[arg(long)]
    pub grep: Vec<String>,
    /// Only lines matching this regular expression; repeatable.
    #[arg(long)]
    pub regex: Vec<String>,
    /// Only lines NOT containing this text; repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// How far back (e.g. 15m, 2h, 7d), unless --start is given.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Start time (RFC 3339 or Unix seconds).
    #[arg(long)]
    pub start: Option<String>,
    /// End time (RFC 3339 or Unix seconds; default: now).
    #[arg(long)]
    pub end: Option<String>,
    /// At most this many lines (1-5000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Oldest first (default: newest first).
    #[arg(long)]
    pub oldest_first: bool,
    /// Keep following new lines after the search.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print namespace/pod/container before each line.
    #[arg(long)]
    pub prefix: bool,
    /// Print the time of each line.
    #[arg(long)]
    pub timestamps: bool,
    /// Print the whole records as JSON, one per line.
    #[arg(long)]
    pub json: bool,
    /// Kubeconfig (default: $KUBECONFIG, else <data-dir>/server/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

fn quoted(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The LogQL query the options ask for.
pub fn logql(args: &LogsSearchArgs) -> anyhow::Result<String> {
    let mut matchers = Vec::new();
    let (mut selector_body, mut filters) = match args.query.as_deref().map(str::trim) {
        Some(q) if q.starts_with('{') => {
            let end = q
                .find('}')
                .ok_or_else(|| anyhow::anyhow!("query {q:?}: the selector's '}}' is missing"))?;
            (
                q[1..end].trim().to_string(),
                q[end + 1..].trim().to_string(),
            )
        }
        Some(q) if !q.is_empty() => (String::new(), format!("|= {}", quoted(q))),
        _ => (String::new(), String::new()),
    };
    let pattern = |v: &str| v.contains(['*', '|']) || v.contains(".*");
    for (label, value) in [
        ("namespace", &args.namespace),
        ("pod", &args.pod),
        ("container", &args.container),
        ("node", &args.node),
    ] {
        if let Some(value) = value {
            let op = if pattern(value) { "=~" } else { "=" };
            matchers.push(format!("{label}{op}{}", quoted(value)));
        }
    }
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {label:?}: use key=value"))?;
        matchers.push(format!("{key}={}", quoted(value)));
    }
    if !matchers.is_empty() {
        if !selector_body.is_empty() {
            selector_body.push_str(", ");
        }
        selector_body.push_str(&matchers.join(", "));
    }
    for (op, values) in [
        ("|=", &args.grep),
        ("|~", &args.regex),
        ("!=", &args.exclude),
    ] {
        for value in values {
            if !filters.is_empty() {
                filters.push(' ');
            }
            filters.push_str(&format!("{op} {}", quoted(value)));
        }
    }
    if selector_body.is_empty() && filters.is_empty() {
        return Ok(String::new());
    }
    if selector_body.is_empty() {
        // LogQL needs one non-empty matcher; every stream has a namespace
        selector_body.push_str(r#"namespace=~".+""#);
    }
    Ok(format!("{{{selector_body}}} {filters}").trim().to_string())
}

fn print(args: &LogsSearchArgs, record: &mini_observe::SearchedRecord) {
    if args.json {
        let value = serde_json::json!({
            "time": record.time, "labels": record.labels,
            "podLabels": record.pod_labels, "line": record.line,
        });
        println!("{value}");
        return;
    }
    let mut out = String::new();
    if args.timestamps {
        out.push_str(&record.time);
        out.push(' ');
    }
    if args.prefix {
        let get = |k: &str| record.labels.get(k).map(String::as_str).unwrap_or("");
        out.push_str(&format!(
            "[{}/{}/{}] ",
            get("namespace"),
            get("pod"),
            get("container")
        ));
    }
    out.push_str(&record.line);
    println!("{out}");
}

pub fn run_logs(command: LogsCommand) -> anyhow::Result<()> {
    let LogsCommand::Search(args) = command;
    if !(1..=5000).contains(&args.limit) {
        anyhow::bail!("--limit {}: use a number from 1 to 5000", args.limit);
    }
    let request = mini_observe::LogSearchRequest {
        query: logql(&args)?,
        since: args.start.is_none().then(|| args.since.clone()),
        start: args.start.clone(),
        end: args.end.clone(),
        limit: Some(args.limit),
        forward: args.oldest_first,
        cursor: None,
    };
    let path = args.kubeconfig.clone().unwrap_or_else(|| {
        mini_regclient::kubeconfig::default_kubeconfig(
            std::env::var("KUBECONFIG").ok().as_deref(),
            &args.data_dir,
        )
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = crate::kube_client(&path, "; pass --kubeconfig or set KUBECONFIG").await?;
        let page = mini_observe::search_logs(&client, &request).await?;
        // newest-first pages print oldest at the top when followed, like `kubectl logs -f`
        let mut records = page.records;
        if args.follow && !args.oldest_first {
            records.reverse();
        }
        for record in &records {
            print(&args, record);
        }
        if page.truncated_by_time_budget {
            eprintln!("mini: the search stopped at its time budget; narrow the time range or the selector for more");
        }
        if args.follow {
            let tail = mini_observe::LogSearchRequest {
                since: Some("0s".to_string()),
                start: None,
                end: None,
                cursor: None,
                ..request.clone()
            };
            mini_observe::tail_logs(&client, &tail, |record| print(&args, &record)).await?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        logs: LogsCommand,
    }

    fn args(list: &[&str]) -> LogsSearchArgs {
        let mut argv = vec!["logs", "search"];
        argv.extend_from_slice(list);
        let LogsCommand::Search(args) = Cli::parse_from(argv).logs;
        args
    }

    #[test]
    fn logql_from_options_builds_selector_and_filters() {
        let q = logql(&args(&[
            "-n",
            "web",
            "-p",
            "shop-.*",
            "-l",
            "app=shop",
            "--grep",
            "timeout",
            "--exclude",
            "debug",
        ]))
        .unwrap();
        assert_eq!(
            q,
            r#"{namespace="web", pod=~"shop-.*", app="shop"} |= "timeout" != "debug""#
        );
    }

    #[test]
    fn logql_plain_text_query_is_a_line_filter() {
        assert_eq!(
            logql(&args(&["disk full"])).unwrap(),
            r#"{namespace=~".+"} |= "disk full""#
        );
    }

    #[test]
    fn logql_selector_query_merges_with_options() {
        let q = logql(&args(&[r#"{container="app"} |~ "5\d\d""#, "-n", "x"])).unwrap();
        assert_eq!(q, r#"{container="app", namespace="x"} |~ "5\d\d""#);
    }

    #[test]
    fn logql_no_options_is_empty() {
        assert_eq!(logql(&args(&[])).unwrap(), "");
    }

    #[test]
    fn parse_size_binary_and_decimal_units() {
        assert_eq!(parse_size("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1.5Gi").is_err());
        assert!(parse_size("10Gb").is_err());
    }

    #[test]
    fn logql_bad_label_is_refused() {
        assert!(logql(&args(&["-l", "app"])).is_err());
    }
}
