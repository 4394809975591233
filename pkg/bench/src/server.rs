//! The `mini server` under test: spawned in a temp data dir on a free loopback port, read
//! for RSS through `/proc/<pid>/status`, killed by PID when done (or dropped on error).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BenchError;

/// Marker the server prints once it serves.
const LISTENING: &str = "mini server listening on https://";

/// A running `mini server` child and the temp dir holding its data and log.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pid: u32,
    /// Base URL, e.g. `https://127.0.0.1:41234`.
    pub url: String,
    pub kubeconfig: PathBuf,
    log: PathBuf,
    // Declared last so it is removed after `Drop::drop` killed the child.
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `mini server` with port 0 (the server picks a free port and prints it) and
    /// waits until it prints its address and has written the admin kubeconfig. `extra_args`
    /// are appended to the server's flags.
    pub async fn spawn(
        mini_bin: &Path,
        extra_args: &[String],
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("mini-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("creating the temp data dir", e))?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::io("creating the server log", e))?;
        let mut child = Command::new(mini_bin)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port", "0"])
            // no node agent: these benchmarks use simulated nodes (or none)
            .arg("--disable-agent")
            // the API benchmark measures the API server alone: its pods are bound to nodes that
            // don't exist, which pod GC would (rightly) delete
            .args(["--disable", "scheduler", "--disable", "controllers"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {}", mini_bin.display()), e))?;
        let pid = child.id().ok_or_else(|| BenchError::ServerExited {
            log_tail: String::new(),
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::ServerExited {
                log_tail: String::new(),
            })?;
        let mut server = Self {
            child,
            pid,
            url: String::new(),
            kubeconfig: data_dir.join("server").join("admin.kubeconfig"),
            log,
            dir,
        };
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + timeout;
        let address = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, lines.next_line()).await {
                Err(_) => {
                    return Err(BenchError::Timeout(format!(
                        "mini server did not print its address within {timeout:?}; log:\n{}",
                        server.log_tail()
                    )))
                }
                Ok(Ok(Some(line))) => {
                    if let Some(addr) = line.strip_prefix(LISTENING) {
                        break addr.trim().to_string();
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Err(BenchError::ServerExited {
                        log_tail: server.log_tail(),
                    })
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        server.url = format!("https://{address}");
        if !server.kubeconfig.exists() {
            return Err(BenchError::Timeout(format!(
                "{} missing after the server started",
                server.kubeconfig.display()
            )));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Current resident set size of the server, in bytes.
    pub fn rss_bytes(&self) -> Result<u64, BenchError> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .map_err(|e| BenchError::io(format!("reading {path}"), e))?;
        parse_vm_rss(&status).ok_or_else(|| BenchError::Parse(format!("no VmRSS line in {path}")))
    }

    /// CPU time (user + system, all threads) the server used so far.
    pub fn cpu_time(&self) -> Result<Duration, BenchError> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| BenchError::io(format!("reading {path}"), e))?;
        let ticks = parse_cpu_ticks(&stat)
            .ok_or_else(|| BenchError::Parse(format!("no utime/stime in {path}")))?;
        // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Bytes the server wrote to stderr so far (its log).
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the child has exited already.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server by PID, waits for it, and removes the temp dir.
    pub async fn shutdown(mut self) -> Result<(), BenchError> {
        // `Child::kill` sends SIGKILL to this child's PID and reaps it.
        let killed = self.child.kill().await;
        let dir = self.dir.path().to_path_buf();
        drop(self);
        killed.map_err(|e| BenchError::io("killing mini server", e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| BenchError::io(format!("removing {}", dir.display()), e))?;
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Error paths: kill by PID before the temp dir field is removed.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the kernel reports kB).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let factor = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    Some(value * factor)
}

/// `utime + stime` (clock ticks) of a `/proc/<pid>/stat` line; the command name may hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tmini\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  812344 kB\nVmSize:\t  812340 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   31232 kB\nRssAnon:\t   20000 kB\nThreads:\t5\n";

    #[test]
    fn parse_vm_rss_status_text_returns_bytes() {
        assert_eq!(parse_vm_rss(STATUS), Some(31232 * 1024));
    }

    #[test]
    fn parse_vm_rss_missing_line_is_none() {
        assert_eq!(parse_vm_rss("Name:\tmini\nVmSize:\t 1 kB\n"), None);
    }

    #[test]
    fn parse_vm_rss_garbage_value_is_none() {
        assert_eq!(parse_vm_rss("VmRSS:\t lots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t 12 parsecs\n"), None);
    }

    #[test]
    fn parse_cpu_ticks_stat_line_sums_utime_and_stime() {
        let stat = "4242 (mini (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 350 25 0 0 20 0 9 0 100 812340 7808 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(375));
    }

    #[test]
    fn parse_cpu_ticks_truncated_line_is_none() {
        assert_eq!(parse_cpu_ticks("1 (mini) S 1 2 3"), None);
    }

    #[test]
    fn parse_vm_rss_does_not_match_vmhwm() {
        assert_eq!(parse_vm_rss("VmHWM:\t 99 kB\nVmRSS:\t 1 kB\n"), Some(1024));
    }
}
