//! Parsers of the /proc files the sampler reads: stat, meminfo, loadavg, net/dev, mounts,
//! `<pid>/cgroup`, `self/stat` and `self/status`.

use std::collections::BTreeMap;

/// The CPU modes node_exporter reports, in /proc/stat's column order.
pub const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// One `cpuN` line of /proc/stat: seconds per mode (in [`CPU_MODES`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTimes {
    pub cpu: String,
    pub seconds: Vec<(&'static str, f64)>,
}

/// /proc/stat: the per-CPU lines, the `cpu` total line in ticks, and `btime`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcStat {
    pub cpus: Vec<CpuTimes>,
    /// All CPUs, not idle nor iowait, in nanoseconds (what the Summary API calls usage).
    pub busy_nanos: u64,
    pub boot_time_seconds: Option<u64>,
}

pub fn parse_stat(text: &str, ticks_per_second: u64) -> ProcStat {
    let ticks = ticks_per_second.max(1);
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "btime" {
            stat.boot_time_seconds = fields.next().and_then(|v| v.parse().ok());
            continue;
        }
        let Some(index) = key.strip_prefix("cpu") else {
            continue;
        };
        let values: Vec<u64> = fields.map(|v| v.parse().unwrap_or(0)).collect();
        if index.is_empty() {
            // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
            let busy: u64 = values
                .iter()
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .map(|(_, v)| *v)
                .sum();
            stat.busy_nanos = (busy as u128 * 1_000_000_000 / ticks as u128) as u64;
            continue;
        }
        stat.cpus.push(CpuTimes {
            cpu: index.to_string(),
            seconds: CPU_MODES
                .iter()
                .enumerate()
                .map(|(i, mode)| {
                    let v = values.get(i).copied().unwrap_or(0);
                    (*mode, v as f64 / ticks as f64)
                })
                .collect(),
        });
    }
    stat
}

/// /proc/meminfo in bytes by field name (`MemTotal`, ...).
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let factor = if parts.next() == Some("kB") { 1024 } else { 1 };
            Some((key.trim().to_string(), value.saturating_mul(factor)))
        })
        .collect()
}

/// /proc/loadavg: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub interface: String,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let values: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if values.len() < 9 {
                return None;
            }
            Some(NetDev {
                interface: name.trim().to_string(),
                receive_bytes: values[0],
                transmit_bytes: values[8],
            })
        })
        .collect()
}

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// Undoes the octal escapes of /proc/mounts (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Mount {
                device: unescape(f.next()?),
                mountpoint: unescape(f.next()?),
                fstype: f.next()?.to_string(),
                options: f.next()?.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The mount holding `path` (the longest mount point that is a prefix of it; the last one
/// mounted wins on a tie, as the kernel shows the top of a stack).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let within = |m: &Mount| {
        let mp = m.mountpoint.trim_end_matches('/');
        path == m.mountpoint
            || mp.is_empty()
            || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
    };
    mounts
        .iter()
        .filter(|m| within(m))
        .max_by_key(|m| m.mountpoint.trim_end_matches('/').len())
        .and_then(|best| {
            mounts
                .iter()
                .rev()
                .find(|m| m.mountpoint == best.mountpoint)
        })
}

/// One line of /proc/<pid>/cgroup: the controllers of a v1 hierarchy (empty for v2's `0::`)
/// and the process's path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_pid_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(CgroupLine {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// From /proc/self/stat: CPU seconds (user + system) and the start time after boot in seconds.
pub fn parse_self_stat(text: &str, ticks_per_second: u64) -> Option<(f64, f64)> {
    // the command may hold spaces and parentheses: fields start after the last ')'
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, starttime 22
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks_per_second.max(1) as f64;
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    let start = field(22)? as f64 / ticks;
    Some((cpu, start))
}

/// From /proc/self/status: the resident set size in bytes (`VmRSS`).
pub fn parse_status_rss(text: &str) -> Option<u64> {
    parse_meminfo(text).get("VmRSS").copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_reads_per_cpu_modes_busy_time_and_boot_time() {
        let text = "cpu  100 20 30 400 50 6 7 8 0 0\n\
                    cpu0 60 10 20 200 25 3 4 4 0 0\n\
                    cpu1 40 10 10 200 25 3 3 4 0 0\n\
                    intr 1 2 3\nbtime 1700000000\n";
        let stat = parse_stat(text, 100);
        assert_eq!(stat.boot_time_seconds, Some(1_700_000_000));
        // busy = 100+20+30+6+7+8 = 171 ticks = 1.71 s
        assert_eq!(stat.busy_nanos, 1_710_000_000);
        assert_eq!(stat.cpus.len(), 2);
        assert_eq!(stat.cpus[1].cpu, "1");
        assert_eq!(stat.cpus[0].seconds[0], ("user", 0.6));
        assert_eq!(stat.cpus[0].seconds[3], ("idle", 2.0));
        assert_eq!(stat.cpus[0].seconds[7], ("steal", 0.04));
    }

    #[test]
    fn parse_meminfo_converts_kilobytes() {
        let m = parse_meminfo("MemTotal:       2048 kB\nHugePages_Total:       3\n");
        assert_eq!(m["MemTotal"], 2048 * 1024);
        assert_eq!(m["HugePages_Total"], 3);
    }

    #[test]
    fn parse_loadavg_reads_three_averages() {
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/123 4567\n"),
            Some((0.5, 1.25, 2.0))
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn parse_net_dev_reads_rx_and_tx_bytes() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
             eth0: 123456    100    0    0    0     0          0         0    654321     90    0    0    0     0       0          0\n";
        let devs = parse_net_dev(text);
        assert_eq!(devs.len(), 2);
        assert_eq!(
            devs[1],
            NetDev {
                interface: "eth0".into(),
                receive_bytes: 123_456,
                transmit_bytes: 654_321
            }
        );
    }

    #[test]
    fn mount_of_picks_the_longest_mount_point() {
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /var/lib ext4 rw 0 0\n\
             tmpfs /var/lib/with\\040space tmpfs rw 0 0\n",
        );
        assert_eq!(
            mount_of(&mounts, "/var/lib/mini").map(|m| m.device.as_str()),
            Some("/dev/sdb1")
        );
        assert_eq!(
            mount_of(&mounts, "/var/library").map(|m| m.device.as_str()),
            Some("/dev/sda1")
        );
        assert_eq!(
            mount_of(&mounts, "/var/lib/with space/x").map(|m| m.fstype.as_str()),
            Some("tmpfs")
        );
        assert_eq!(
            mount_of(&mounts, "/").map(|m| m.mountpoint.as_str()),
            Some("/")
        );
    }

    #[test]
    fn parse_pid_cgroup_reads_v1_and_v2_lines() {
        let lines =
            parse_pid_cgroup("4:memory:/k8s.io/abc\n2:cpu,cpuacct:/k8s.io/abc\n0::/kubepods/x\n");
        assert_eq!(lines[0].controllers, vec!["memory"]);
        assert_eq!(lines[1].controllers, vec!["cpu", "cpuacct"]);
        assert!(lines[2].controllers.is_empty());
        assert_eq!(lines[2].path, "/kubepods/x");
    }

    #[test]
    fn parse_self_stat_handles_spaces_in_the_command() {
        let text = "42 (mini (agent) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 1000000 500 18446744073709551615";
        assert_eq!(parse_self_stat(text, 100), Some((3.0, 10.0)));
    }
}
