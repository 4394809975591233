//! Root-only test of the built-in CNI plugins as containerd runs them: the real `mini` binary
//! started through symlinks named `bridge`, `loopback` and `portmap` (`CNI_*` environment and
//! config on stdin, like cnitool), inside a "host" network namespace of its own with two pod
//! namespaces. Checks addresses, routes, ping and TCP across the bridge, a hostPort DNAT (from a
//! pod and from the host's localhost), then that DEL cleans everything up. Skips (saying why)
//! when not root or when `ip`, `nsenter`, `nft`, `busybox` or `python3` are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

const SUBNET: &str = "10.199.7.0/24";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn missing_prerequisite() -> Option<String> {
    if !nix_is_root() {
        return Some("not root".into());
    }
    ["ip", "nsenter", "nft", "busybox", "python3"]
        .into_iter()
        .find(|t| !have(t))
        .map(|t| format!("{t} not in PATH"))
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces and processes of one run, removed on drop.
struct Lab {
    host: String,
    pods: [String; 2],
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.pods.iter().chain([&self.host]) {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Lab {
    fn netns_path(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    /// Runs plugin `plugin` inside the host namespace; returns (exit ok, stdout JSON).
    fn cni(&self, plugin: &str, command: &str, pod: usize, conf: &Value) -> (bool, Value) {
        let bin = self.dir.path().join("bin");
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", Self::netns_path(&self.host).display()))
            .arg(bin.join(plugin))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("container-{pod}"))
            .env("CNI_NETNS", Self::netns_path(&self.pods[pod]))
            .env(
                "CNI_IFNAME",
                if plugin == "loopback" { "lo" } else { "eth0" },
            )
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default")
            .env("CNI_PATH", &bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start plugin");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("plugin output");
        let text = String::from_utf8_lossy(&out.stdout);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{plugin} printed {text:?}: {e}"))
        };
        (out.status.success(), value)
    }

    fn ok(&self, plugin: &str, command: &str, pod: usize, conf: &Value) -> Value {
        let (ok, out) = self.cni(plugin, command, pod, conf);
        assert!(ok, "{plugin} {command} for pod {pod} failed: {out}");
        out
    }
}

fn bridge_conf(data: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "minitest", "type": "bridge", "bridge": "mcni0",
        "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": SUBNET}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

fn tcp_get(netns: &str, host: &str, port: u16) -> String {
    let script = format!(
        "import socket; s = socket.create_connection(('{host}', {port}), timeout=5); print(s.recv(16).decode())"
    );
    sh("ip", &["netns", "exec", netns, "python3", "-c", &script])
        .trim()
        .to_string()
}

#[test]
fn builtin_cni_plugins_wire_two_pods_and_a_host_port_then_del_cleans_up() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipping the CNI plugin test: {reason}");
        return;
    }
    let pid = std::process::id();
    let mut lab = Lab {
        host: format!("mcnih{pid}"),
        pods: [format!("mcnia{pid}"), format!("mcnib{pid}")],
        children: Vec::new(),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let bin = lab.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mini"), bin.join(name)).expect("link");
    }
    for ns in lab.pods.iter().chain([&lab.host]) {
        sh("ip", &["netns", "add", ns]);
    }
    sh("ip", &["-n", &lab.host, "link", "set", "lo", "up"]);
    let data = lab.dir.path().join("ipam");
    let conf = bridge_conf(&data);

    // ADD: loopback and bridge for both pods
    let lo_conf = json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"});
    let mut results = Vec::new();
    for pod in 0..2 {
        let lo = lab.ok("loopback", "ADD", pod, &lo_conf);
        assert_eq!(lo["ips"][0]["address"], "127.0.0.1/8");
        let out = lab.ok("bridge", "ADD", pod, &conf);
        results.push(out);
    }
    assert_eq!(results[0]["ips"][0]["address"], "10.199.7.2/24");
    assert_eq!(results[1]["ips"][0]["address"], "10.199.7.3/24");
    let addr = sh(
        "ip",
        &["-n", &lab.pods[0], "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(addr.contains("10.199.7.2/24"), "{addr}");
    let route = sh("ip", &["-n", &lab.pods[0], "route", "show", "default"]);
    assert!(route.contains("via 10.199.7.1 dev eth0"), "{route}");
    let link = sh("ip", &["-n", &lab.pods[0], "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400") && link.contains("UP"), "{link}");
    let lo = sh("ip", &["-n", &lab.pods[0], "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let bridge = sh(
        "ip",
        &["-n", &lab.host, "-o", "addr", "show", "dev", "mcni0"],
    );
    assert!(bridge.contains("10.199.7.1/24"), "{bridge}");
    let veth = results[0]["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();
    let port = sh("ip", &["-n", &lab.host, "-d", "link", "show", &veth]);
    assert!(port.contains("master mcni0"), "{port}");
    assert!(port.contains("hairpin on"), "{port}");
    assert!(
        data.join("minitest").join("10.199.7.2").is_file()
            && data.join("minitest").join("last_reserved_ip.0").is_file()
            && data.join("minitest").join("lock").is_file()
    );

    // CHECK
    let mut checked = conf.clone();
    checked["prevResult"] = results[0].clone();
    lab.ok("bridge", "CHECK", 0, &checked);

    // traffic across the bridge
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &lab.pods[0],
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            "10.199.7.3",
        ],
    );
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.pods[1], "python3", "-c",
            "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 80)); s.listen(8)\nwhile True:\n    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"])
        .spawn()
        .expect("server");
    lab.children.push(server);
    let mut reply = String::new();
    for _ in 0..50 {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.pods[0], "python3", "-c",
                "import socket; print(socket.create_connection(('10.199.7.3', 80), timeout=2).recv(16).decode())"])
            .output()
            .expect("client");
        if out.status.success() {
            reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(reply, "hello", "TCP across the bridge");

    // hostPort 8080 -> pod 1 port 80
    let mut pm = json!({
        "cniVersion": "1.0.0", "name": "minitest", "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    });
    pm["prevResult"] = results[1].clone();
    let passed = lab.ok("portmap", "ADD", 1, &pm);
    assert_eq!(passed["ips"], results[1]["ips"]);
    assert_eq!(
        tcp_get(&lab.pods[0], "10.199.7.1", 8080),
        "hello",
        "hostPort from a pod"
    );
    assert_eq!(
        tcp_get(&lab.host, "127.0.0.1", 8080),
        "hello",
        "hostPort from localhost"
    );
    let mut pm_check = pm.clone();
    pm_check["prevResult"] = passed.clone();
    lab.ok("portmap", "CHECK", 1, &pm_check);

    // DEL in the order libcni uses (reverse), twice, then everything is gone
    for _ in 0..2 {
        lab.ok("portmap", "DEL", 1, &pm);
        for pod in 0..2 {
            lab.ok("bridge", "DEL", pod, &conf);
            lab.ok("loopback", "DEL", pod, &lo_conf);
        }
    }
    let links = sh("ip", &["-n", &lab.host, "-o", "link", "show"]);
    assert!(!links.contains("veth"), "{links}");
    assert!(!sh("ip", &["-n", &lab.pods[0], "-o", "link", "show"]).contains("eth0"));
    let leases: Vec<String> = std::fs::read_dir(data.join("minitest"))
        .expect("lease dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "{leases:?}");
    let table = sh(
        "nsenter",
        &[
            &format!("--net=/var/run/netns/{}", lab.host),
            "nft",
            "list",
            "table",
            "ip",
            "mini-portmap",
        ],
    );
    assert!(
        !table.contains("dnat-") && !table.contains("snat-"),
        "{table}"
    );
    // DEL with the pod namespace gone is still fine
    sh("ip", &["netns", "delete", &lab.pods[0]]);
    lab.ok("bridge", "DEL", 0, &conf);
    lab.ok("loopback", "DEL", 0, &lo_conf);
}
