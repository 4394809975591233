//! The decisions of `mini killall`, as pure functions over what the host said: which processes
//! are ours, which mounts go and in what order, which network namespaces and cgroups belong to
//! our containerd's pods.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use crate::system::{ProcInfo, System};

/// Where mini runs when no `--data-dir` or `MINI_DATA_DIR` is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mini";

/// The data dir killall acts for, and the containerd paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The data dir, symlinks resolved when it exists.
    pub data_dir: PathBuf,
    /// Other spellings of the data dir that mean the same directory (as given, normalized).
    pub aliases: Vec<PathBuf>,
}

impl Scope {
    pub fn new(data_dir: PathBuf) -> Scope {
        Scope {
            data_dir,
            aliases: Vec::new(),
        }
    }

    /// Adds another spelling of the same data dir.
    pub fn with_alias(mut self, alias: PathBuf) -> Scope {
        if alias != self.data_dir && !self.aliases.contains(&alias) {
            self.aliases.push(alias);
        }
        self
    }

    fn spellings(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.data_dir).chain(self.aliases.iter())
    }

    /// Whether `dir` (normalized) is this data dir.
    pub fn is_data_dir(&self, dir: &Path) -> bool {
        self.spellings().any(|d| d == dir)
    }

    fn containerd_dirs(&self) -> Vec<PathBuf> {
        self.spellings()
            .map(|d| d.join("agent").join("containerd"))
            .collect()
    }

    /// Every spelling of the containerd socket.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.containerd_dirs()
            .into_iter()
            .map(|d| d.join("containerd.sock"))
            .collect()
    }

    /// containerd's `--state` dir.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("containerd").join("state")
    }

    /// The trees under which every mount is ours.
    pub fn mount_roots(&self) -> Vec<PathBuf> {
        self.spellings().cloned().collect()
    }
}

/// `path` without `.`, `..` and trailing slashes (lexically).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The value of `flag` in `args` (`--flag V` or `--flag=V`).
fn flag_value<'a>(args: &'a [String], flags: &[&str]) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        for flag in flags {
            if arg == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// `value` as an absolute normalized path (relative ones are relative to the process's cwd).
fn resolve(value: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    let path = Path::new(value);
    if path.is_absolute() {
        Some(normalize(path))
    } else {
        cwd.map(|c| normalize(&c.join(path)))
    }
}

/// Whether `p` is a `mini server` or `mini agent` whose data dir is ours.
pub fn is_our_mini(p: &ProcInfo, scope: &Scope) -> bool {
    let exe_is_mini = p
        .exe
        .as_ref()
        .and_then(|e| e.file_name())
        .is_some_and(|n| n == "mini");
    if !exe_is_mini {
        return false;
    }
    let args = p.cmdline.get(1..).unwrap_or_default();
    let subcommand = args.iter().find(|a| !a.starts_with('-'));
    if !matches!(subcommand.map(String::as_str), Some("server" | "agent")) {
        return false;
    }
    let data_dir = flag_value(args, &["--data-dir"])
        .map(str::to_string)
        .or_else(|| p.env_data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    resolve(&data_dir, p.cwd.as_deref()).is_some_and(|d| scope.is_data_dir(&d))
}

/// The mini server/agent processes of our data dir.
pub fn mini_processes(processes: &[ProcInfo], scope: &Scope) -> Vec<u32> {
    processes
        .iter()
        .filter(|p| is_our_mini(p, scope))
        .map(|p| p.pid)
        .collect()
}

/// Our containerd, its shims and every process under the shims (the pods).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub containerd: Vec<u32>,
    pub shims: Vec<u32>,
    pub pods: Vec<u32>,
}

fn program_name(p: &ProcInfo) -> String {
    p.cmdline
        .first()
        .map(|a| base_name(a).to_string())
        .or_else(|| {
            p.exe
                .as_ref()
                .and_then(|e| e.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

fn serves_our_socket(p: &ProcInfo, flags: &[&str], scope: &Scope) -> bool {
    let args = p.cmdline.get(1..).unwrap_or_default();
    let sockets = scope.sockets();
    flag_value(args, flags)
        .and_then(|v| resolve(v, p.cwd.as_deref()).or_else(|| Some(PathBuf::from(v))))
        .is_some_and(|s| sockets.contains(&s))
}

pub fn runtime_processes(processes: &[ProcInfo], scope: &Scope) -> Runtime {
    let mut runtime = Runtime::default();
    for p in processes {
        let name = program_name(p);
        if name == "containerd" && serves_our_socket(p, &["--address", "-a"], scope) {
            runtime.containerd.push(p.pid);
        } else if name.starts_with("containerd-shim")
            && serves_our_socket(p, &["-address", "--address"], scope)
        {
            runtime.shims.push(p.pid);
        }
    }
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in processes {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen: BTreeSet<u32> = runtime
        .shims
        .iter()
        .chain(runtime.containerd.iter())
        .copied()
        .collect();
    let mut queue: VecDeque<u32> = runtime.shims.iter().copied().collect();
    while let Some(pid) = queue.pop_front() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                runtime.pods.push(child);
                queue.push_back(child);
            }
        }
    }
    runtime
}

/// A task bundle of our containerd: what its config.json says about the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub id: String,
    pub netns: Option<PathBuf>,
    pub cgroups_path: Option<String>,
}

/// Parses a bundle's config.json (an OCI runtime spec).
pub fn parse_bundle(id: &str, config_json: &str) -> Option<Bundle> {
    let spec: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let linux = spec.get("linux")?;
    let netns = linux
        .get("namespaces")
        .and_then(|n| n.as_array())
        .and_then(|list| {
            list.iter().find_map(|ns| {
                (ns.get("type")?.as_str()? == "network")
                    .then(|| ns.get("path")?.as_str().map(PathBuf::from))?
            })
        });
    Some(Bundle {
        id: id.to_string(),
        netns,
        cgroups_path: linux
            .get("cgroupsPath")
            .and_then(|c| c.as_str())
            .map(str::to_string),
    })
}

/// Every task bundle under our containerd's state dir (`io.containerd.runtime.v2.task/NS/ID`).
pub fn read_bundles(sys: &dyn System, scope: &Scope) -> Vec<Bundle> {
    let tasks = scope.state_dir().join("io.containerd.runtime.v2.task");
    let mut bundles = Vec::new();
    for ns in sys.read_dir(&tasks).unwrap_or_default() {
        let ns_dir = tasks.join(&ns);
        for id in sys.read_dir(&ns_dir).unwrap_or_default() {
            let config = ns_dir.join(&id).join("config.json");
            if let Some(b) = sys
                .read_file(&config)
                .ok()
                .and_then(|text| parse_bundle(&id, &text))
            {
                bundles.push(b);
            }
        }
    }
    bundles
}

/// The pod network namespaces of our bundles: CNI-made files (`cni-*`) under the netns dir, or
/// under containerd's CRI state dir (`.../io.containerd.grpc.v1.cri/netns`, where mini's
/// containerd mounts them: `netns_mounts_under_state_dir`).
pub fn pod_netns(bundles: &[Bundle]) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for path in bundles.iter().filter_map(|b| b.netns.as_ref()) {
        let parent = path.parent();
        let in_cri_state_dir = parent.and_then(|p| p.file_name()).and_then(|n| n.to_str())
            == Some("netns")
            && parent
                .and_then(|p| p.parent())
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                == Some("io.containerd.grpc.v1.cri");
        let in_netns_dir = in_cri_state_dir
            || matches!(
                parent.and_then(|p| p.to_str()),
                Some("/var/run/netns" | "/run/netns")
            );
        let cni_named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cni-"));
        if in_netns_dir && cni_named {
            out.insert(path.clone());
        }
    }
    out.into_iter().collect()
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mountinfo line: mount root, mount point, fstype.
struct MountLine {
    root: String,
    point: PathBuf,
    fstype: String,
}

fn parse_mountinfo(mountinfo: &str) -> Vec<MountLine> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split_whitespace().collect();
            Some(MountLine {
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                fstype: right.split_whitespace().next()?.to_string(),
            })
        })
        .collect()
}

/// The mount points strictly under one of `roots`, in the order to unmount them: deepest
/// first, and of mounts stacked on one point the latest first. A root itself is left alone
/// (the data dir may be a filesystem of its own).
pub fn mounts_under(mountinfo: &str, roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = parse_mountinfo(mountinfo)
        .into_iter()
        .map(|m| m.point)
        .filter(|p| roots.iter().any(|r| p != r && p.starts_with(r)))
        .collect();
    mounts.reverse();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts
}

/// The cgroup directories of our bundles, in every mounted cgroup hierarchy. Only absolute
/// cgroupfs paths that end in the task's id count (containerd's `/k8s.io/ID`).
pub fn pod_cgroups(mountinfo: &str, bundles: &[Bundle]) -> Vec<PathBuf> {
    let hierarchies: Vec<MountLine> = parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .collect();
    let mut out = BTreeSet::new();
    for b in bundles {
        let Some(path) = b.cgroups_path.as_deref() else {
            continue;
        };
        if !path.starts_with('/') || path.contains(':') || base_name(path) != b.id {
            continue;
        }
        for h in &hierarchies {
            let relative = if h.root == "/" {
                Some(path)
            } else {
                path.strip_prefix(h.root.as_str())
                    .filter(|r| r.starts_with('/'))
            };
            if let Some(rel) = relative {
                out.insert(h.point.join(rel.trim_start_matches('/')));
            }
        }
    }
    out.into_iter().collect()
}
