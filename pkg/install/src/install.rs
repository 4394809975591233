//! `mini install`: puts the binary, the unit and its environment file in place, changing only
//! what differs, (re)starts the service only when something changed, then waits until it is
//! Ready and says what it is waiting for -- or why it failed.
//!
//! Settings live in the unit's environment file: the `MINI_*` variables the flags of
//! `mini server`/`mini agent` read (`MINI_URL`, `MINI_TOKEN`, `MINI_NODE_NAME`, ...), the proxy
//! variables, and `MINI_EXEC`, the extra flags, which the unit's `ExecStart` expands. A re-run
//! starts from the previous file, so settings given earlier are kept unless given again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::envfile;
use crate::probe::ClusterProbe;
use crate::system::{System, UnitState};
use crate::units::{self, Role};
use crate::InstallError;

/// The default data dir of `mini server`/`mini agent`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mini";
/// Where config files live (removed by uninstall).
pub const CONFIG_DIR: &str = "/etc/mini";
/// How often the unit's state is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// What the person asked for.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// The installer's environment (every variable; only the recorded ones are kept).
    pub env: BTreeMap<String, String>,
    /// `--server URL`: join this server as an agent.
    pub server: Option<String>,
    /// `--token T`.
    pub token: Option<String>,
    /// Flags after `--`, for `mini server`/`mini agent` (become `MINI_EXEC`).
    pub extra_args: Vec<String>,
    /// The binary to install.
    pub binary: PathBuf,
    /// How long to wait for Ready.
    pub timeout: Duration,
}

/// What an install run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallOutcome {
    pub role: Option<Role>,
    pub binary_changed: bool,
    pub unit_changed: bool,
    pub env_changed: bool,
    /// `start`, `restart` or nothing.
    pub started: Option<&'static str>,
}

/// The settings of an installed role, read back from its environment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub role: Option<Role>,
    pub env: BTreeMap<String, String>,
}

/// Reads what an earlier run installed (the role whose unit file exists, server first).
pub fn installed(sys: &dyn System) -> Result<Installed, InstallError> {
    for role in Role::ALL {
        if sys.read(&role.unit_path())?.is_some() {
            let env = match sys.read(&role.env_path())? {
                Some(bytes) => envfile::parse(&String::from_utf8_lossy(&bytes)),
                None => BTreeMap::new(),
            };
            return Ok(Installed {
                role: Some(role),
                env,
            });
        }
    }
    Ok(Installed::default())
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The environment file's variables: the previous ones, then what this run gives.
pub fn merge_env(
    previous: &BTreeMap<String, String>,
    request: &InstallRequest,
) -> Result<BTreeMap<String, String>, InstallError> {
    let mut env = previous.clone();
    let mut given: BTreeMap<String, String> = request
        .env
        .iter()
        .filter(|(k, _)| envfile::is_recorded(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(url) = &request.server {
        given.insert("MINI_URL".into(), url.clone());
    }
    if let Some(token) = &request.token {
        given.insert("MINI_TOKEN".into(), token.clone());
    }
    if !request.extra_args.is_empty() {
        if let Some(bad) = request
            .extra_args
            .iter()
            .find(|a| a.is_empty() || a.chars().any(char::is_whitespace))
        {
            return Err(InstallError::Usage(format!(
                "extra flag {bad:?} is empty or holds whitespace, which the unit cannot pass on; put that setting in {CONFIG_DIR}/config.yaml"
            )));
        }
        given.insert("MINI_EXEC".into(), request.extra_args.join(" "));
    }
    // a token and a token file exclude each other: the one given now wins
    if given.contains_key("MINI_TOKEN") && !given.contains_key("MINI_TOKEN_FILE") {
        env.remove("MINI_TOKEN_FILE");
    }
    if given.contains_key("MINI_TOKEN_FILE") && !given.contains_key("MINI_TOKEN") {
        env.remove("MINI_TOKEN");
    }
    env.extend(given);
    Ok(env)
}

/// Server unless a server URL is set; an agent needs a token.
pub fn role_for(env: &BTreeMap<String, String>) -> Result<Role, InstallError> {
    if env.get("MINI_URL").is_none_or(|u| u.is_empty()) {
        return Ok(Role::Server);
    }
    let has_token = ["MINI_TOKEN", "MINI_TOKEN_FILE"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.is_empty()));
    if !has_token {
        return Err(InstallError::Usage(
            "joining a server (MINI_URL or --server) needs MINI_TOKEN, MINI_TOKEN_FILE or --token: print one on the server with `cat /var/lib/mini/server/node-token`".into(),
        ));
    }
    Ok(Role::Agent)
}

/// The value of `--name` in a `MINI_EXEC`-style flag string.
fn exec_flag(exec: &str, name: &str) -> Option<String> {
    let mut words = exec.split_whitespace();
    let long = format!("--{name}");
    while let Some(w) = words.next() {
        if w == long {
            return words.next().map(str::to_string);
        }
        if let Some(v) = w.strip_prefix(&format!("{long}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// A setting from `--name` in `MINI_EXEC`, else the variable `var`.
pub fn setting(env: &BTreeMap<String, String>, flag: &str, var: &str) -> Option<String> {
    env.get("MINI_EXEC")
        .and_then(|e| exec_flag(e, flag))
        .or_else(|| env.get(var).filter(|v| !v.is_empty()).cloned())
}

/// The data dir the installed service uses.
pub fn data_dir(env: &BTreeMap<String, String>) -> PathBuf {
    PathBuf::from(setting(env, "data-dir", "MINI_DATA_DIR").unwrap_or(DEFAULT_DATA_DIR.into()))
}

/// The bin dir the binary goes to.
pub fn bin_dir(env: &BTreeMap<String, String>) -> PathBuf {
    PathBuf::from(
        env.get("MINI_BIN_DIR")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or(units::DEFAULT_BIN_DIR.into()),
    )
}

/// Installs, (re)starts when something changed, and waits for Ready.
pub fn install(
    sys: &dyn System,
    probe: &dyn ClusterProbe,
    request: &InstallRequest,
    out: &mut dyn Write,
) -> Result<InstallOutcome, InstallError> {
    let previous = installed(sys)?;
    let env = merge_env(&previous.env, request)?;
    let role = role_for(&env)?;
    let bin_dir = bin_dir(&env);
    let unit = role.unit_name();
    let mut outcome = InstallOutcome {
        role: Some(role),
        ..Default::default()
    };
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "[mini install] {line}");
    };

    // the other role's unit goes when the role changes
    let mut reload = false;
    if let Some(old) = previous.role.filter(|r| *r != role) {
        say(out, format!("switching from {} to {unit}", old.unit_name()));
        let _ = sys.systemctl(&["disable", "--now", old.unit_name()]);
        sys.remove(&old.unit_path())?;
        sys.remove(&old.env_path())?;
        reload = true;
    }

    // 1. the binary, only when its content differs
    let binary = sys.read(&request.binary)?.ok_or_else(|| {
        InstallError::Usage(format!(
            "the binary to install, {}, does not exist",
            request.binary.display()
        ))
    })?;
    let target = bin_dir.join("mini");
    if sys.read(&target)?.as_deref() != Some(&binary[..]) {
        say(out, format!("installing {}", target.display()));
        sys.write_atomic(&target, &binary, 0o755)?;
        outcome.binary_changed = true;
    }

    // 2. the unit and its environment file
    let unit_text = units::render_unit(role, &bin_dir);
    if sys.read(&role.unit_path())?.as_deref() != Some(unit_text.as_bytes()) {
        say(out, format!("writing {}", role.unit_path().display()));
        sys.write_atomic(&role.unit_path(), unit_text.as_bytes(), 0o644)?;
        outcome.unit_changed = true;
        reload = true;
    }
    let env_text = envfile::render(&env);
    if sys.read(&role.env_path())?.as_deref() != Some(env_text.as_bytes()) {
        say(out, format!("writing {}", role.env_path().display()));
        sys.write_atomic(&role.env_path(), env_text.as_bytes(), 0o600)?;
        outcome.env_changed = true;
    }
    sys.create_dir_all(Path::new(CONFIG_DIR))?;
    if reload {
        sys.systemctl(&["daemon-reload"])?;
    }

    // 3. enable, start or restart
    let before = sys.unit_state(unit)?;
    if !is_true(request.env.get("MINI_SKIP_ENABLE")) && before.unit_file_state != "enabled" {
        say(out, format!("enabling {unit}"));
        sys.systemctl(&["enable", unit])?;
    }
    if is_true(request.env.get("MINI_SKIP_START")) {
        say(out, format!("not starting {unit} (MINI_SKIP_START)"));
        return Ok(outcome);
    }
    let changed = outcome.binary_changed || outcome.unit_changed || outcome.env_changed;
    let running = matches!(
        before.active_state.as_str(),
        "active" | "activating" | "reloading"
    );
    let action = match (running, changed) {
        (true, true) => Some("restart"),
        (false, _) => Some("start"),
        (true, false) => None,
    };
    if let Some(action) = action {
        if before.active_state == "failed" {
            let _ = sys.systemctl(&["reset-failed", unit]);
        }
        say(out, format!("{action}ing {unit}"));
        sys.systemctl(&[action, "--no-block", unit])?;
    } else {
        say(out, format!("nothing changed; {unit} keeps running"));
    }
    outcome.started = action;

    // 4. Ready
    wait_ready(
        sys,
        probe,
        role,
        &env,
        &before,
        action.is_some(),
        request.timeout,
        out,
    )?;
    Ok(outcome)
}

/// Polls the unit (and, for a server, the cluster) until Ready; fails as soon as the service
/// exits, with its status and last log lines.
#[allow(clippy::too_many_arguments)]
fn wait_ready(
    sys: &dyn System,
    probe: &dyn ClusterProbe,
    role: Role,
    env: &BTreeMap<String, String>,
    before: &UnitState,
    started: bool,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), InstallError> {
    let unit = role.unit_name();
    let kubeconfig = setting(env, "write-kubeconfig", "MINI_WRITE_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir(env).join("server").join("admin.kubeconfig"));
    let node = setting(env, "node-name", "MINI_NODE_NAME");
    let exec = env.get("MINI_EXEC").cloned().unwrap_or_default();
    let needs_node = !(exec.split_whitespace().any(|w| w == "--disable-agent")
        || is_true(env.get("MINI_DISABLE_AGENT")));
    let deadline = sys.elapsed() + timeout;
    let mut min_restarts = before.n_restarts;
    let mut last_line = String::new();
    loop {
        let state = sys.unit_state(unit)?;
        // our start ran once the invocation changed (or nothing was started)
        let ours = !started || state.invocation_id != before.invocation_id;
        let crashed = ours
            && (state.active_state == "failed"
                || state.sub_state == "auto-restart"
                || state.n_restarts > min_restarts);
        min_restarts = min_restarts.min(state.n_restarts);
        if crashed {
            let logs = sys.journal(unit, 15);
            let _ = writeln!(out, "[mini install] last log lines of {unit}:");
            for line in logs.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let last = failure_line(&logs, unit);
            return Err(InstallError::UnitFailed {
                unit: unit.to_string(),
                state: format!(
                    "{} ({}, result {})",
                    state.active_state, state.sub_state, state.result
                ),
                reason: last,
            });
        }
        let waiting = if ours && state.active_state == "active" {
            match role {
                Role::Agent => return done(out, unit),
                Role::Server => {
                    match probe.server_ready(&kubeconfig, node.as_deref(), needs_node) {
                        Ok(()) => return done(out, unit),
                        Err(why) => why,
                    }
                }
            }
        } else {
            let status = if state.status_text.is_empty() {
                String::new()
            } else {
                format!(": {}", state.status_text)
            };
            format!(
                "{unit} is {} ({}){status}",
                state.active_state, state.sub_state
            )
        };
        if waiting != last_line {
            let _ = writeln!(out, "[mini install] waiting: {waiting}");
            last_line = waiting.clone();
        }
        if sys.elapsed() >= deadline {
            return Err(InstallError::Timeout {
                secs: timeout.as_secs(),
                unit: unit.to_string(),
                what: waiting,
            });
        }
        sys.sleep(POLL);
    }
}

/// The log line that says why the service stopped: mini's own error line (`mini: ...`), else
/// the last line that is not systemd's own bookkeeping about the unit.
fn failure_line(logs: &str, unit: &str) -> String {
    let lines: Vec<&str> = logs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("mini: "))
        .or_else(|| {
            lines.iter().rev().find(|l| {
                !l.starts_with(unit.trim_end_matches(".service"))
                    && !l.starts_with("Failed to start")
                    && !l.starts_with("Starting ")
                    && !l.starts_with("Started ")
            })
        })
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no log lines".to_string())
}

fn done(out: &mut dyn Write, unit: &str) -> Result<(), InstallError> {
    let _ = writeln!(out, "[mini install] {unit} is ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::FakeSystem;
    use std::cell::RefCell;

    struct FakeProbe {
        answers: RefCell<Vec<Result<(), String>>>,
    }

    impl FakeProbe {
        fn ready() -> Self {
            FakeProbe {
                answers: RefCell::new(vec![Ok(())]),
            }
        }
    }

    impl ClusterProbe for FakeProbe {
        fn server_ready(&self, _: &Path, _: Option<&str>, _: bool) -> Result<(), String> {
            let mut a = self.answers.borrow_mut();
            if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            }
        }
    }

    const BIN: &str = "/tmp/new/mini";

    fn request(env: &[(&str, &str)]) -> InstallRequest {
        InstallRequest {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            server: None,
            token: None,
            extra_args: Vec::new(),
            binary: PathBuf::from(BIN),
            timeout: Duration::from_secs(60),
        }
    }

    fn state(active: &str, sub: &str, inv: &str, restarts: u32) -> UnitState {
        UnitState {
            active_state: active.into(),
            sub_state: sub.into(),
            invocation_id: inv.into(),
            n_restarts: restarts,
            unit_file_state: "enabled".into(),
            ..Default::default()
        }
    }

    fn machine() -> FakeSystem {
        let sys = FakeSystem::default();
        sys.put(BIN, b"binary v1", 0o755);
        sys
    }

    fn run(
        sys: &FakeSystem,
        req: &InstallRequest,
    ) -> (Result<InstallOutcome, InstallError>, String) {
        let mut out = Vec::new();
        let r = install(sys, &FakeProbe::ready(), req, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn install_fresh_machine_writes_everything_enables_and_starts() {
        let sys = machine();
        sys.set_states(
            "mini-server.service",
            vec![
                UnitState {
                    active_state: "inactive".into(),
                    unit_file_state: "disabled".into(),
                    ..Default::default()
                },
                state("activating", "start", "a", 0),
                state("active", "running", "a", 0),
            ],
        );
        let (r, out) = run(
            &sys,
            &request(&[("MINI_NODE_NAME", "n1"), ("PATH", "/bin")]),
        );
        let outcome = r.unwrap();
        assert_eq!(outcome.role, Some(Role::Server));
        assert_eq!(outcome.started, Some("start"));
        assert_eq!(
            sys.take_calls(),
            vec![
                "write /usr/local/bin/mini",
                "write /etc/systemd/system/mini-server.service",
                "write /etc/systemd/system/mini-server.service.env",
                "systemctl daemon-reload",
                "systemctl enable mini-server.service",
                "systemctl start --no-block mini-server.service",
            ]
        );
        let (env, mode) = sys
            .file("/etc/systemd/system/mini-server.service.env")
            .unwrap();
        assert_eq!(mode, 0o600);
        let env = envfile::parse(&String::from_utf8(env).unwrap());
        assert_eq!(env.get("MINI_NODE_NAME").map(String::as_str), Some("n1"));
        assert!(!env.contains_key("PATH"));
        assert_eq!(
            sys.file("/usr/local/bin/mini").unwrap(),
            (b"binary v1".to_vec(), 0o755)
        );
        assert!(
            out.contains("waiting: mini-server.service is activating (start)"),
            "{out}"
        );
        assert!(out.contains("is ready"), "{out}");
    }

    fn installed_machine(env: &[(&str, &str)]) -> FakeSystem {
        let sys = machine();
        sys.set_states(
            "mini-server.service",
            vec![
                state("inactive", "dead", "", 0),
                state("active", "running", "a", 0),
            ],
        );
        let (r, _) = run(&sys, &request(env));
        r.unwrap();
        sys.take_calls();
        sys.set_states(
            "mini-server.service",
            vec![state("active", "running", "a", 0)],
        );
        sys
    }

    #[test]
    fn install_rerun_without_arguments_changes_and_restarts_nothing() {
        let sys = installed_machine(&[("MINI_NODE_NAME", "n1"), ("HTTPS_PROXY", "http://p:3128")]);
        let (r, out) = run(&sys, &request(&[]));
        let outcome = r.unwrap();
        assert_eq!(outcome.started, None);
        assert!(!outcome.binary_changed && !outcome.unit_changed && !outcome.env_changed);
        assert!(sys.take_calls().is_empty());
        assert!(out.contains("nothing changed"), "{out}");
        let env = sys
            .file("/etc/systemd/system/mini-server.service.env")
            .unwrap()
            .0;
        let env = envfile::parse(&String::from_utf8(env).unwrap());
        assert_eq!(env["MINI_NODE_NAME"], "n1");
        assert_eq!(env["HTTPS_PROXY"], "http://p:3128");
    }

    #[test]
    fn install_new_binary_replaces_it_and_restarts_without_reload() {
        let sys = installed_machine(&[]);
        sys.put(BIN, b"binary v2", 0o755);
        sys.set_states(
            "mini-server.service",
            vec![
                state("active", "running", "a", 0),
                state("active", "running", "b", 0),
            ],
        );
        let (r, _) = run(&sys, &request(&[]));
        assert_eq!(r.unwrap().started, Some("restart"));
        assert_eq!(
            sys.take_calls(),
            vec![
                "write /usr/local/bin/mini",
                "systemctl restart --no-block mini-server.service"
            ]
        );
    }

    #[test]
    fn install_new_setting_keeps_old_ones_and_restarts() {
        let sys = installed_machine(&[("MINI_NODE_NAME", "n1")]);
        sys.set_states(
            "mini-server.service",
            vec![
                state("active", "running", "a", 0),
                state("active", "running", "b", 0),
            ],
        );
        let mut req = request(&[]);
        req.extra_args = vec!["--node-label".into(), "a=b".into()];
        let (r, _) = run(&sys, &req);
        assert_eq!(r.unwrap().started, Some("restart"));
        assert_eq!(
            sys.take_calls(),
            vec![
                "write /etc/systemd/system/mini-server.service.env",
                "systemctl restart --no-block mini-server.service"
            ]
        );
        let env = sys
            .file("/etc/systemd/system/mini-server.service.env")
            .unwrap()
            .0;
        let env = envfile::parse(&String::from_utf8(env).unwrap());
        assert_eq!(env["MINI_NODE_NAME"], "n1");
        assert_eq!(env["MINI_EXEC"], "--node-label a=b");
    }

    #[test]
    fn install_other_bin_dir_rewrites_unit_and_reloads() {
        let sys = installed_machine(&[]);
        sys.set_states(
            "mini-server.service",
            vec![
                state("active", "running", "a", 0),
                state("active", "running", "b", 0),
            ],
        );
        let (r, _) = run(&sys, &request(&[("MINI_BIN_DIR", "/opt/bin")]));
        r.unwrap();
        assert_eq!(
            sys.take_calls(),
            vec![
                "write /opt/bin/mini",
                "write /etc/systemd/system/mini-server.service",
                "write /etc/systemd/system/mini-server.service.env",
                "systemctl daemon-reload",
                "systemctl restart --no-block mini-server.service"
            ]
        );
    }

    #[test]
    fn install_url_and_token_switch_to_agent_and_remove_server_unit() {
        let sys = installed_machine(&[]);
        sys.set_states(
            "mini-agent.service",
            vec![
                UnitState {
                    active_state: "inactive".into(),
                    unit_file_state: "disabled".into(),
                    ..Default::default()
                },
                state("active", "running", "x", 0),
            ],
        );
        let mut req = request(&[]);
        req.server = Some("https://10.0.0.1:6443".into());
        req.token = Some("K10abc::server:s".into());
        let (r, _) = run(&sys, &req);
        assert_eq!(r.unwrap().role, Some(Role::Agent));
        let calls = sys.take_calls();
        assert_eq!(calls[0], "systemctl disable --now mini-server.service");
        assert!(calls.contains(&"remove /etc/systemd/system/mini-server.service".to_string()));
        assert!(calls.contains(&"systemctl enable mini-agent.service".to_string()));
        assert!(sys.file("/etc/systemd/system/mini-agent.service").is_some());
        assert!(sys
            .file("/etc/systemd/system/mini-server.service.env")
            .is_none());
    }

    #[test]
    fn install_url_without_token_is_an_error() {
        let sys = machine();
        let (r, _) = run(&sys, &request(&[("MINI_URL", "https://s:6443")]));
        assert!(r.unwrap_err().to_string().contains("MINI_TOKEN"));
        assert!(sys.take_calls().is_empty());
    }

    #[test]
    fn install_token_file_given_now_replaces_earlier_token() {
        let prev: BTreeMap<String, String> = [("MINI_TOKEN".to_string(), "old".to_string())].into();
        let env = merge_env(&prev, &request(&[("MINI_TOKEN_FILE", "/t")])).unwrap();
        assert!(!env.contains_key("MINI_TOKEN"));
        assert_eq!(env["MINI_TOKEN_FILE"], "/t");
    }

    #[test]
    fn install_skip_start_and_enable_only_writes() {
        let sys = machine();
        let (r, _) = run(
            &sys,
            &request(&[("MINI_SKIP_START", "true"), ("MINI_SKIP_ENABLE", "true")]),
        );
        assert_eq!(r.unwrap().started, None);
        let calls = sys.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| c.contains("enable") || c.contains("start")),
            "{calls:?}"
        );
        let env = sys
            .file("/etc/systemd/system/mini-server.service.env")
            .unwrap()
            .0;
        assert!(!String::from_utf8(env).unwrap().contains("SKIP"));
    }

    #[test]
    fn install_agent_rejected_token_fails_with_log_line() {
        let sys = machine();
        sys.set_states(
            "mini-agent.service",
            vec![
                UnitState {
                    active_state: "inactive".into(),
                    unit_file_state: "disabled".into(),
                    ..Default::default()
                },
                state("activating", "start", "a", 0),
                state("activating", "auto-restart", "a", 1),
            ],
        );
        *sys.journal.borrow_mut() =
            "starting the agent\nmini: join: the server refused the token (401)".into();
        let mut req = request(&[]);
        req.server = Some("https://s:6443".into());
        req.token = Some("K10x::server:bad".into());
        let (r, out) = run(&sys, &req);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("mini-agent.service failed"), "{err}");
        assert!(err.contains("refused the token"), "{err}");
        assert!(out.contains("last log lines"), "{out}");
    }

    #[test]
    fn failure_line_prefers_mini_error_over_systemd_lines() {
        let logs = "Starting mini-server.service - x...\nmini-server.service: Executable /sbin/modprobe missing\n INFO joined\nmini: node agent: no CNI plugin directory found\nmini-server.service: Main process exited, code=exited\nFailed to start mini-server.service - x.";
        assert_eq!(
            failure_line(logs, "mini-server.service"),
            "mini: node agent: no CNI plugin directory found"
        );
        assert_eq!(
            failure_line(
                "a\nmini-agent.service: Failed with result 'signal'.",
                "mini-agent.service"
            ),
            "a"
        );
        assert_eq!(failure_line("", "mini-agent.service"), "no log lines");
    }

    #[test]
    fn install_timeout_names_what_it_waited_for() {
        let sys = machine();
        sys.set_states(
            "mini-server.service",
            vec![
                UnitState {
                    active_state: "inactive".into(),
                    ..Default::default()
                },
                UnitState {
                    active_state: "activating".into(),
                    sub_state: "start".into(),
                    status_text: "starting containerd".into(),
                    invocation_id: "a".into(),
                    ..Default::default()
                },
            ],
        );
        let mut req = request(&[]);
        req.timeout = Duration::from_secs(5);
        let (r, out) = run(&sys, &req);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("timed out after 5s"), "{err}");
        assert!(err.contains("starting containerd"), "{err}");
        assert_eq!(out.matches("waiting:").count(), 1, "{out}");
    }

    #[test]
    fn install_server_waits_for_cluster_probe() {
        let sys = machine();
        sys.set_states(
            "mini-server.service",
            vec![
                UnitState {
                    active_state: "inactive".into(),
                    ..Default::default()
                },
                state("active", "running", "a", 0),
            ],
        );
        let probe = FakeProbe {
            answers: RefCell::new(vec![
                Err("node n1 is not Ready yet: starting".into()),
                Ok(()),
            ]),
        };
        let mut out = Vec::new();
        install(&sys, &probe, &request(&[]), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("waiting: node n1 is not Ready yet"), "{out}");
    }

    #[test]
    fn install_whitespace_in_extra_flag_is_refused() {
        let mut req = request(&[]);
        req.extra_args = vec!["--node-label=a b".into()];
        assert!(merge_env(&BTreeMap::new(), &req).is_err());
    }

    #[test]
    fn setting_exec_flag_wins_over_variable() {
        let env: BTreeMap<String, String> = [
            (
                "MINI_EXEC".to_string(),
                "--node-label a=b --data-dir=/d".to_string(),
            ),
            ("MINI_DATA_DIR".to_string(), "/e".to_string()),
        ]
        .into();
        assert_eq!(data_dir(&env), PathBuf::from("/d"));
        assert_eq!(data_dir(&BTreeMap::new()), PathBuf::from(DEFAULT_DATA_DIR));
    }
}
