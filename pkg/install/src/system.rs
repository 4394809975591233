//! The host as the installer sees it: files, `systemctl`, `journalctl`, running a program and
//! waiting. [`HostSystem`] is the real machine; tests use a recording fake.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::InstallError;

/// What `systemctl show` says about a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `active`, `activating`, `failed`, `inactive`, ...
    pub active_state: String,
    /// `running`, `start`, `auto-restart`, `dead`, ...
    pub sub_state: String,
    /// The last `STATUS=` the service sent.
    pub status_text: String,
    /// Automatic restarts since the unit was started.
    pub n_restarts: u32,
    /// Changes with every start of the service's process.
    pub invocation_id: String,
    /// `enabled`, `disabled`, ... (`UnitFileState`).
    pub unit_file_state: String,
    /// `success`, `exit-code`, `signal`, ...
    pub result: String,
}

/// Files and services of the host.
pub trait System {
    /// A file's content, `None` when it does not exist.
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, InstallError>;
    /// Replaces a file atomically (temporary file in the same dir, then rename) with this mode.
    fn write_atomic(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> Result<(), InstallError>;
    /// Removes a file or a directory tree; `false` when there was nothing.
    fn remove(&self, path: &Path) -> Result<bool, InstallError>;
    /// Runs `systemctl ARGS`; an error carries its output.
    fn systemctl(&self, args: &[&str]) -> Result<(), InstallError>;
    /// `systemctl show` of a unit.
    fn unit_state(&self, unit: &str) -> Result<UnitState, InstallError>;
    /// The unit's last log lines (empty when the journal has none).
    fn journal(&self, unit: &str, lines: usize) -> String;
    /// Runs a program to completion; an error carries its output.
    fn run(&self, program: &Path, args: &[&str]) -> Result<(), InstallError>;
    /// Waits.
    fn sleep(&self, duration: Duration);
    /// Time since an arbitrary fixed point (for timeouts).
    fn elapsed(&self) -> Duration;
}

/// The real machine.
#[derive(Debug)]
pub struct HostSystem {
    started: Instant,
}

impl HostSystem {
    pub fn new() -> Self {
        HostSystem {
            started: Instant::now(),
        }
    }
}

impl Default for HostSystem {
    fn default() -> Self {
        HostSystem::new()
    }
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> InstallError {
    InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn output(mut command: Command, shown: String) -> Result<String, InstallError> {
    let out = command.output().map_err(|e| InstallError::Command {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // one line: the first thing the program said
        let said = stderr.lines().map(str::trim).find(|l| !l.is_empty());
        let detail = format!("{}: {}", out.status, said.unwrap_or(""));
        return Err(InstallError::Command {
            command: shown,
            detail: detail.trim().to_string(),
        });
    }
    Ok(stdout)
}

impl System for HostSystem {
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", path, e)),
        }
    }

    fn write_atomic(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.mini-install.{}",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.write_all(data)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("writing", path, e));
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<(), InstallError> {
        std::fs::create_dir_all(path).map_err(|e| io("creating", path, e))
    }

    fn remove(&self, path: &Path) -> Result<bool, InstallError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("removing", path, e)),
        };
        let result = if meta.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        result.map_err(|e| io("removing", path, e))?;
        Ok(true)
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), InstallError> {
        let mut c = Command::new("systemctl");
        c.args(args);
        output(c, format!("systemctl {}", args.join(" "))).map(|_| ())
    }

    fn unit_state(&self, unit: &str) -> Result<UnitState, InstallError> {
        let mut c = Command::new("systemctl");
        c.args([
            "show",
            unit,
            "--property=ActiveState,SubState,StatusText,NRestarts,InvocationID,UnitFileState,Result",
        ]);
        let text = output(c, format!("systemctl show {unit}"))?;
        Ok(parse_show(&text))
    }

    fn journal(&self, unit: &str, lines: usize) -> String {
        Command::new("journalctl")
            .args([
                "-u",
                unit,
                "-n",
                &lines.to_string(),
                "--no-pager",
                "-q",
                "-o",
                "cat",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_default()
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<(), InstallError> {
        let mut c = Command::new(program);
        c.args(args);
        output(c, format!("{} {}", program.display(), args.join(" "))).map(|_| ())
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Parses `systemctl show --property=...` output (`Name=value` lines).
pub fn parse_show(text: &str) -> UnitState {
    let mut s = UnitState::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.to_string();
        match k {
            "ActiveState" => s.active_state = v,
            "SubState" => s.sub_state = v,
            "StatusText" => s.status_text = v,
            "NRestarts" => s.n_restarts = v.parse().unwrap_or(0),
            "InvocationID" => s.invocation_id = v,
            "UnitFileState" => s.unit_file_state = v,
            "Result" => s.result = v,
            _ => {}
        }
    }
    s
}

/// A machine's install state kept in memory, recording every `systemctl` and program call.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, VecDeque};
    use std::path::PathBuf;

    #[derive(Debug, Default)]
    pub struct FakeSystem {
        pub files: RefCell<BTreeMap<PathBuf, (Vec<u8>, u32)>>,
        pub calls: RefCell<Vec<String>>,
        /// States `unit_state` returns, in order; the last one repeats.
        pub states: RefCell<BTreeMap<String, VecDeque<UnitState>>>,
        pub journal: RefCell<String>,
        pub failing_programs: RefCell<Vec<String>>,
        pub clock: RefCell<Duration>,
    }

    impl FakeSystem {
        pub fn file(&self, path: &str) -> Option<(Vec<u8>, u32)> {
            self.files.borrow().get(Path::new(path)).cloned()
        }

        pub fn put(&self, path: &str, data: &[u8], mode: u32) {
            self.files
                .borrow_mut()
                .insert(PathBuf::from(path), (data.to_vec(), mode));
        }

        pub fn set_states(&self, unit: &str, states: Vec<UnitState>) {
            self.states
                .borrow_mut()
                .insert(unit.to_string(), states.into());
        }

        /// The calls that change something: everything but `show`/journal reads.
        pub fn take_calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.borrow_mut())
        }
    }

    impl System for FakeSystem {
        fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
            Ok(self.files.borrow().get(path).map(|(d, _)| d.clone()))
        }

        fn write_atomic(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
            self.calls
                .borrow_mut()
                .push(format!("write {}", path.display()));
            self.files
                .borrow_mut()
                .insert(path.to_path_buf(), (data.to_vec(), mode));
            Ok(())
        }

        fn create_dir_all(&self, _path: &Path) -> Result<(), InstallError> {
            Ok(())
        }

        fn remove(&self, path: &Path) -> Result<bool, InstallError> {
            let mut files = self.files.borrow_mut();
            let before = files.len();
            files.retain(|p, _| !p.starts_with(path));
            let removed = files.len() != before;
            if removed {
                self.calls
                    .borrow_mut()
                    .push(format!("remove {}", path.display()));
            }
            Ok(removed)
        }

        fn systemctl(&self, args: &[&str]) -> Result<(), InstallError> {
            self.calls
                .borrow_mut()
                .push(format!("systemctl {}", args.join(" ")));
            Ok(())
        }

        fn unit_state(&self, unit: &str) -> Result<UnitState, InstallError> {
            let mut states = self.states.borrow_mut();
            let Some(queue) = states.get_mut(unit) else {
                return Ok(UnitState {
                    active_state: "inactive".into(),
                    sub_state: "dead".into(),
                    unit_file_state: "disabled".into(),
                    ..Default::default()
                });
            };
            if queue.len() > 1 {
                Ok(queue.pop_front().unwrap_or_default())
            } else {
                Ok(queue.front().cloned().unwrap_or_default())
            }
        }

        fn journal(&self, _unit: &str, _lines: usize) -> String {
            self.journal.borrow().clone()
        }

        fn run(&self, program: &Path, args: &[&str]) -> Result<(), InstallError> {
            let shown = format!("{} {}", program.display(), args.join(" "));
            self.calls.borrow_mut().push(format!("run {shown}"));
            if self.failing_programs.borrow().contains(&shown) {
                return Err(InstallError::Command {
                    command: shown,
                    detail: "exit status: 2".into(),
                });
            }
            Ok(())
        }

        fn sleep(&self, duration: Duration) {
            *self.clock.borrow_mut() += duration;
        }

        fn elapsed(&self) -> Duration {
            *self.clock.borrow()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_show_reads_every_property() {
        let s = parse_show(
            "ActiveState=activating\nSubState=start\nStatusText=starting containerd\nNRestarts=3\nInvocationID=abc\nUnitFileState=enabled\nResult=success\n",
        );
        assert_eq!(s.active_state, "activating");
        assert_eq!(s.sub_state, "start");
        assert_eq!(s.status_text, "starting containerd");
        assert_eq!(s.n_restarts, 3);
        assert_eq!(s.invocation_id, "abc");
        assert_eq!(s.unit_file_state, "enabled");
        assert_eq!(s.result, "success");
    }

    #[test]
    fn host_system_write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.env");
        let sys = HostSystem::new();
        sys.write_atomic(&path, b"one", 0o600).unwrap();
        sys.write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(sys.read(&path).unwrap().unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        assert!(sys.remove(&path).unwrap());
        assert!(!sys.remove(&path).unwrap());
        assert!(sys.read(&path).unwrap().is_none());
    }
}
