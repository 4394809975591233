//! containerd 1.6 accepts mini's registry configuration (root only; skipped with a printed reason
//! otherwise): a private containerd started by `Supervisor` with the rendered config.toml
//! (`[plugins."io.containerd.grpc.v1.cri".registry] config_path`) and the rendered
//! `certs.d/<host>/hosts.toml` files answers a verbose CRI `Status` with RuntimeReady and NetworkReady
//! and shows mini's `config_path` as loaded, and a pull through a mirrored host is sent to the
//! cluster registry's `/v2/<host>/...` path first. A containerd left running by an earlier agent is
//! adopted while its config.toml is unchanged and restarted when it changed (e.g. an upgrade that adds
//! the registry `config_path`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mini_cri::proto::ImageSpec;
use mini_cri::{ContainerdConfig, CriRegistryStatus, RegistryHosts, Runtime, Supervisor};
use tokio_util::sync::CancellationToken;

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for bin in ["containerd", "runc", "containerd-shim-runc-v2"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success());
        if found.ok() != Some(true) {
            return Some(format!("{bin} not installed"));
        }
    }
    if mini_cri::containerd::detect_cni_bin_dir().is_none() {
        return Some("no CNI plugin directory (containernetworking-plugins)".into());
    }
    None
}

/// Kills the test's containerd by the pid in its pid file if the test fails before stopping it.
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn write_conflist(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cni conf dir");
    std::fs::write(
        dir.join("10-test.conflist"),
        r#"{"cniVersion":"0.4.0","name":"regtest","plugins":[{"type":"loopback"}]}"#,
    )
    .expect("conflist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_loads_registry_config_path_and_hosts_files() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED containerd_loads_registry_config_path_and_hosts_files: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mreg")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let root = dir.path().join("c");
    let mut config = ContainerdConfig::new(&root, "mini.local/pause:1", dir.path().join("cni"));
    config.cni_bin_dir = mini_cri::containerd::detect_cni_bin_dir();
    config.log_level = "debug".into();
    write_conflist(&dir.path().join("cni"));
    let _guard = KillOnDrop(config.pid_path());

    // nothing listens on this port: a pull through the mirror fails there, which the log shows
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let registry = format!("127.0.0.1:{}", closed.local_addr().expect("addr").port());
    drop(closed);
    let tls = dir.path().join("tls");
    let hosts = RegistryHosts {
        registry: registry.clone(),
        aliases: Vec::new(),
        mirrors: vec!["mirrored.invalid:5000".into()],
        ca_file: tls.join("ca.crt"),
        client_cert: tls.join("client.crt"),
        client_key: tls.join("client.key"),
    };
    // containerd reads the certificate files when it pulls: give it real PEM files
    std::fs::create_dir_all(&tls).expect("tls dir");
    let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).expect("cert");
    std::fs::write(tls.join("ca.crt"), ca.cert.pem()).expect("ca");
    std::fs::write(tls.join("client.crt"), ca.cert.pem()).expect("cert");
    std::fs::write(tls.join("client.key"), ca.signing_key.serialize_pem()).expect("key");
    let written = hosts.write(&config.certs_dir()).expect("hosts files");
    assert_eq!(written.written.len(), 2, "{written:?}");

    let handle = Supervisor::start(config.clone(), CancellationToken::new())
        .await
        .expect("containerd starts with the rendered config");
    let runtime = handle.runtime().expect("client");
    let status = runtime.verbose_status().await.expect("verbose status");
    let registry_status = CriRegistryStatus::from_status(&status);
    assert!(registry_status.runtime_ready, "{registry_status:?}");
    assert!(registry_status.network_ready, "{registry_status:?}");
    registry_status
        .check(&config.certs_dir())
        .expect("registry config loaded");

    let pulled = runtime
        .pull_image(
            &ImageSpec {
                image: "mirrored.invalid:5000/team/app:1".into(),
                ..Default::default()
            },
            None,
        )
        .await;
    assert!(pulled.is_err(), "nothing serves that image: {pulled:?}");
    let log = std::fs::read_to_string(config.log_path()).unwrap_or_default();
    let mirror_url = format!("https://{registry}/v2/mirrored.invalid:5000/team/app/manifests/1");
    assert!(
        log.contains(&mirror_url),
        "containerd did not try the mirror {mirror_url}: {pulled:?}\n{}",
        log.lines()
            .filter(|l| l.contains("mirrored.invalid"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // the registry's own images go to it directly
    let own = runtime
        .pull_image(
            &ImageSpec {
                image: format!("{registry}/team/app:2"),
                ..Default::default()
            },
            None,
        )
        .await;
    assert!(own.is_err(), "nothing serves that image: {own:?}");
    let log = std::fs::read_to_string(config.log_path()).unwrap_or_default();
    let own_url = format!("https://{registry}/v2/team/app/manifests/2");
    assert!(
        log.contains(&own_url),
        "containerd did not try {own_url}: {own:?}"
    );

    // a rewrite with the same settings changes nothing; containerd stays healthy
    assert!(!hosts.write(&config.certs_dir()).expect("rewrite").changed());
    let again = CriRegistryStatus::from_status(
        &runtime
            .verbose_status()
            .await
            .expect("status after rewrite"),
    );
    again.check(&config.certs_dir()).expect("still healthy");
    tokio::time::timeout(Duration::from_secs(30), handle.stop())
        .await
        .expect("containerd stops");
}

#[test]
fn supervisor_restarts_adopted_containerd_only_when_config_changed() {
    if let Some(reason) = skip_reason() {
        println!(
            "SKIPPED supervisor_restarts_adopted_containerd_only_when_config_changed: {reason}"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mreg")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut config = ContainerdConfig::new(
        dir.path().join("c"),
        "mini.local/pause:1",
        dir.path().join("cni"),
    );
    config.cni_bin_dir = mini_cri::containerd::detect_cni_bin_dir();
    write_conflist(&dir.path().join("cni"));
    let _guard = KillOnDrop(config.pid_path());

    // an agent that dies without stopping its containerd: its runtime goes away, containerd stays
    let agent = tokio::runtime::Runtime::new().expect("runtime");
    let first = agent
        .block_on(Supervisor::start(config.clone(), CancellationToken::new()))
        .expect("start");
    let first_pid = first.pid();
    drop(first);
    drop(agent);

    let main = tokio::runtime::Runtime::new().expect("runtime");
    let same = main
        .block_on(Supervisor::start(config.clone(), CancellationToken::new()))
        .expect("adopt");
    assert!(same.adopted());
    assert_eq!(same.pid(), first_pid);
    drop(same);
    drop(main);

    // the next agent renders a different config: the adopted containerd is replaced
    config.log_level = "debug".into();
    let main = tokio::runtime::Runtime::new().expect("runtime");
    let changed = main
        .block_on(Supervisor::start(config.clone(), CancellationToken::new()))
        .expect("restart with the new config");
    assert!(!changed.adopted());
    assert_ne!(changed.pid(), first_pid);
    assert!(
        !std::path::Path::new(&format!("/proc/{first_pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{first_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "the old containerd still runs"
    );
    let status = main
        .block_on(async { changed.runtime().expect("client").verbose_status().await })
        .expect("status");
    CriRegistryStatus::from_status(&status)
        .check(&config.certs_dir())
        .expect("healthy after the restart");
    main.block_on(changed.stop());
}
