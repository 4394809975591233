//! Node-level points, named and labelled as node_exporter does: CPU by cpu and mode, memory,
//! load, filesystems (the data dir's and `/`), network (not `lo`, not pods' `veth*`), boot time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hostfs::HostFs;
use crate::procfs::{self, Mount};
use crate::{labels, NodeStatsError, Point};

/// Node totals the Summary API needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeTotals {
    pub cpu_busy_nanos: u64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
}

fn read(fs: &dyn HostFs, path: &str) -> Result<String, NodeStatsError> {
    fs.read(Path::new(path))
        .map_err(|source| NodeStatsError::Read {
            path: PathBuf::from(path),
            source,
        })
}

/// Samples the node; `filesystems` are paths whose filesystem is reported (deduplicated by
/// mount point). A file that cannot be read loses its series for this round, not the round.
pub fn node_points(
    fs: &dyn HostFs,
    mounts: &[Mount],
    filesystems: &[PathBuf],
) -> Result<(Vec<Point>, NodeTotals), NodeStatsError> {
    let mut points = Vec::new();
    let mut totals = NodeTotals::default();

    // /proc/stat is the one file the node row cannot do without
    let stat = procfs::parse_stat(&read(fs, "/proc/stat")?, fs.clock_ticks());
    totals.cpu_busy_nanos = stat.busy_nanos;
    for cpu in &stat.cpus {
        for (mode, seconds) in &cpu.seconds {
            points.push((
                labels(&[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", &cpu.cpu),
                    ("mode", mode),
                ]),
                *seconds,
            ));
        }
    }
    if let Some(boot) = stat.boot_time_seconds {
        points.push((
            labels(&[("__name__", "node_boot_time_seconds")]),
            boot as f64,
        ));
    }

    match read(fs, "/proc/meminfo") {
        Ok(text) => {
            let mem = procfs::parse_meminfo(&text);
            totals.memory_total_bytes = mem.get("MemTotal").copied().unwrap_or(0);
            totals.memory_available_bytes = mem.get("MemAvailable").copied().unwrap_or(0);
            for field in ["MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached"] {
                if let Some(v) = mem.get(field) {
                    let name = format!("node_memory_{field}_bytes");
                    points.push((labels(&[("__name__", &name)]), *v as f64));
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "no memory sample"),
    }

    match read(fs, "/proc/loadavg").map(|t| procfs::parse_loadavg(&t)) {
        Ok(Some((l1, l5, l15))) => {
            for (name, v) in [("node_load1", l1), ("node_load5", l5), ("node_load15", l15)] {
                points.push((labels(&[("__name__", name)]), v));
            }
        }
        Ok(None) => tracing::debug!("/proc/loadavg: unexpected format"),
        Err(e) => tracing::debug!(error = %e, "no load sample"),
    }

    let mut seen = BTreeMap::new();
    for path in filesystems {
        let Some(mount) = procfs::mount_of(mounts, &path.display().to_string()) else {
            continue;
        };
        if seen.insert(mount.mountpoint.clone(), ()).is_some() {
            continue;
        }
        match fs.filesystem(Path::new(&mount.mountpoint)) {
            Ok(size) => {
                for (name, v) in [
                    ("node_filesystem_size_bytes", size.size_bytes),
                    ("node_filesystem_avail_bytes", size.avail_bytes),
                ] {
                    points.push((
                        labels(&[
                            ("__name__", name),
                            ("device", &mount.device),
                            ("mountpoint", &mount.mountpoint),
                            ("fstype", &mount.fstype),
                        ]),
                        v as f64,
                    ));
                }
            }
            Err(e) => {
                tracing::debug!(mountpoint = mount.mountpoint, error = %e, "no filesystem sample")
            }
        }
    }

    match read(fs, "/proc/net/dev") {
        Ok(text) => {
            for dev in procfs::parse_net_dev(&text) {
                if dev.interface == "lo" || dev.interface.starts_with("veth") {
                    continue;
                }
                for (name, v) in [
                    ("node_network_receive_bytes_total", dev.receive_bytes),
                    ("node_network_transmit_bytes_total", dev.transmit_bytes),
                ] {
                    points.push((
                        labels(&[("__name__", name), ("device", &dev.interface)]),
                        v as f64,
                    ));
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "no network sample"),
    }
    Ok((points, totals))
}
