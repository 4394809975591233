//! Benchmark of the log shipper's CPU: a writer process appends 1,000 CRI lines/s to a container
//! log file, the shipper (this process) ships them over HTTP to a sink process on loopback, and
//! `tail -F file > /dev/null` reads the same file as the peer; prints each one's CPU time / wall
//! time as % of a core. `cargo run --release -p mini-logship --example logship_bench [seconds] [lines/s]`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_logship::{HttpSink, LogShipConfig, Shipper, StaticPodLabels};
use tokio_util::sync::CancellationToken;

/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const CLOCK_TICKS: f64 = 100.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("writer") => writer(
            Path::new(&args[2]),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        Some("sink") => sink(),
        _ => {
            let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
            let rate: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
            bench(seconds, rate);
        }
    }
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command (which may hold spaces) start after the last ')'
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the stat line: 11 and 12 after the state
    (ticks(11) + ticks(12)) / CLOCK_TICKS
}

fn bench(seconds: u64, rate: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("logs/bench_app_uid-1/app/0.log");
    std::fs::create_dir_all(log.parent().unwrap()).expect("log dir");
    std::fs::File::create(&log).expect("log file");
    let me = std::env::current_exe().expect("own path");

    let mut sink = Command::new(&me)
        .arg("sink")
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink process");
    let mut port = String::new();
    let mut out = sink.stdout.take().expect("sink stdout");
    let mut byte = [0u8; 1];
    while out.read(&mut byte).expect("sink port") == 1 && byte[0] != b'\n' {
        port.push(byte[0] as char);
    }
    let url = format!("http://127.0.0.1:{}", port.trim());

    let mut tail = Command::new("tail")
        .args(["-F", "-n", "0"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail -F");
    let mut writer = Command::new(&me)
        .arg("writer")
        .arg(&log)
        .arg(seconds.to_string())
        .arg(rate.to_string())
        .spawn()
        .expect("writer process");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (shipped, batches, wall, ours, tails) = runtime.block_on(async {
        let client =
            kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
        let config = LogShipConfig::new(
            "bench-node".into(),
            dir.path().join("logs"),
            dir.path().join("state"),
        );
        let shipper = Shipper::new(
            config,
            Arc::new(HttpSink::new(client, true)),
            Arc::new(NoRotation),
            Arc::new(StaticPodLabels::default()),
        )
        .expect("shipper");
        let stats = shipper.stats();
        let stop = CancellationToken::new();
        let task = tokio::spawn(shipper.run(stop.clone()));
        let self_pid = std::process::id().to_string();
        let tail_pid = tail.id().to_string();
        let (start, ours0, tail0) = (
            Instant::now(),
            cpu_seconds(&self_pid),
            cpu_seconds(&tail_pid),
        );
        let want = seconds * rate;
        let deadline = Instant::now() + Duration::from_secs(seconds + 30);
        while stats.snapshot().entries_shipped < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let (ours, tails) = (
            cpu_seconds(&self_pid) - ours0,
            cpu_seconds(&tail_pid) - tail0,
        );
        stop.cancel();
        task.await.ok();
        let s = stats.snapshot();
        (s.entries_shipped, s.batches_sent, wall, ours, tails)
    });
    finish(&mut writer);
    finish(&mut tail);
    finish(&mut sink);

    let want = seconds * rate;
    println!("logship bench: {rate} CRI lines/s for {seconds} s ({want} lines of ~130 bytes), shipped over HTTP (zstd JSON) to a loopback sink");
    println!("{:<34} {:>14} {:>12}", "", "CPU seconds", "% of a core");
    println!(
        "{:<34} {:>14.2} {:>12.2}",
        "mini logship (shipper process)",
        ours,
        100.0 * ours / wall
    );
    println!(
        "{:<34} {:>14.2} {:>12.2}",
        "tail -F file > /dev/null",
        tails,
        100.0 * tails / wall
    );
    println!("wall {wall:.1} s; shipped {shipped}/{want} lines in {batches} batches");
    if shipped != want {
        eprintln!("not all lines were shipped");
        std::process::exit(1);
    }
}

fn finish(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Appends `rate` CRI lines a second for `seconds`, paced in 10 ms steps.
fn writer(path: &Path, seconds: u64, rate: u64) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("log file");
    let start = Instant::now();
    let steps = seconds * 100;
    let mut written = 0u64;
    for step in 1..=steps {
        let due = rate * step / 100;
        let mut chunk = String::new();
        while written < due {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
            chunk.push_str(&format!(
                "{now} stdout F 10.0.{}.{} - - \"GET /api/items/{written} HTTP/1.1\" 200 {} \"-\" \"curl/8.5\"\n",
                written % 250,
                written % 199,
                512 + written % 4096
            ));
            written += 1;
        }
        file.write_all(chunk.as_bytes()).expect("write");
        let next = start + Duration::from_millis(10 * step);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// A loopback HTTP server answering 200 to every request; prints its port first.
fn sink() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr").port());
    std::io::stdout().flush().ok();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut need = None;
        loop {
            let n = conn.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if need.is_none() {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    need = Some(end + 4 + len);
                }
            }
            if need.is_some_and(|n| buf.len() >= n) {
                break;
            }
        }
        let _ =
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
    }
}

/// The bench file stays below the rotation size.
struct NoRotation;

#[async_trait::async_trait]
impl mini_logship::Reopener for NoRotation {
    async fn reopen(&self, _: &str, _: &str, _: u32) -> Result<mini_logship::Reopened, String> {
        Ok(mini_logship::Reopened::NotRunning)
    }
}
