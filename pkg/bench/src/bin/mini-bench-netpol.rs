//! `mini-bench-netpol`: programs mini's NetworkPolicy table (`ip mini-netpol`, through the
//! agent's own `Enforcer` and netlink) into a network namespace for a synthetic cluster with a
//! given number of policies, and prints how long the full and an incremental sync took.
//! `scripts/bench.sh netpol` runs it around its connection-latency measurements.
//!
//! The cluster: the target pod 10.42.0.5 (`app=web`) on this node, a decoy pod 10.42.0.9
//! (`app=decoy`) on this node, the client 10.42.1.6 (`role=client`) on another node. With N
//! policies: one default-deny for the target, one allowing the client, N/100 more selecting
//! the target but allowing other peers (evaluated before the client's allow), and the rest
//! selecting the decoy (each with its own peer set). With 0 policies the table holds only its
//! base chain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use mini_netpol::{Enforcer, Inputs, PodInfo};
use serde_json::json;

const USAGE: &str = "usage: mini-bench-netpol NETNS POLICIES | mini-bench-netpol NETNS --cleanup";

fn pod(name: &str, ip: &str, node: &str, label: (&str, &str)) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: name.into(),
        labels: BTreeMap::from([(label.0.to_string(), label.1.to_string())]),
        ip: ip.parse().expect("bench pod ip"),
        node: node.into(),
        named_ports: vec![("http".into(), 6, 8080)],
    }
}

fn policy(name: &str, spec: serde_json::Value) -> anyhow::Result<NetworkPolicy> {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": name}, "spec": spec,
    }))
    .context("building a bench policy")
}

fn inputs(policies: usize, extra_peers: usize) -> anyhow::Result<Inputs> {
    let mut pods = vec![
        pod("web", "10.42.0.5", "bench", ("app", "web")),
        pod("decoy", "10.42.0.9", "bench", ("app", "decoy")),
        pod("client", "10.42.1.6", "remote", ("role", "client")),
    ];
    for i in 0..extra_peers {
        pods.push(pod(
            &format!("peer{i}"),
            &format!("10.42.{}.{}", 2 + i / 250, 1 + i % 250),
            "remote",
            ("role", &format!("peer{}", i % 50)),
        ));
    }
    let mut list = Vec::new();
    if policies > 0 {
        list.push(policy(
            "deny-web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
        )?);
    }
    if policies > 1 {
        list.push(policy(
            "allow-client",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                "ports": [{"port": "http"}]}]}),
        )?);
    }
    for i in 2..policies {
        let target = if i % 100 == 0 { "web" } else { "decoy" };
        list.push(policy(
            // sorted before "allow-client" when selecting the target, so evaluated first
            &format!("a{i:05}"),
            json!({"podSelector": {"matchLabels": {"app": target}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": format!("peer{}", i % 50)}}},
                                         {"ipBlock": {"cidr": "192.168.0.0/16", "except": [format!("192.168.{}.0/24", i % 256)]}}],
                                "ports": [{"port": 8000 + (i % 100) as i32, "endPort": 8100}]}]}),
        )?);
    }
    Ok(Inputs {
        policies: list,
        pods,
        namespaces: BTreeMap::from([("default".to_string(), BTreeMap::new())]),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [netns, what] = args.as_slice() else {
        bail!("{USAGE}");
    };
    let nft: Arc<dyn mini_sys::nft::Nft> =
        Arc::new(mini_sys::nft_netlink::NftNetlink::in_netns(netns));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    if what == "--cleanup" {
        rt.block_on(mini_netpol::cleanup(nft.as_ref()))?;
        return Ok(());
    }
    let policies: usize = what
        .replace(['_', ','], "")
        .parse()
        .with_context(|| format!("POLICIES {what:?} is not a number\n{USAGE}"))?;
    let mut enforcer = Enforcer::new(nft, "bench");
    let full_inputs = inputs(policies, 500)?;
    let started = Instant::now();
    let full = rt.block_on(enforcer.sync(&full_inputs))?;
    let full_total = started.elapsed();
    // One more peer pod: an incremental sync (set elements only).
    let more = inputs(policies, 501)?;
    let started = Instant::now();
    let incr = rt.block_on(enforcer.sync(&more))?;
    let incr_total = started.elapsed();
    let started = Instant::now();
    let table = enforcer.desired(&more);
    let compute = started.elapsed();
    println!(
        "{{\"policies\":{policies},\"chains\":{},\"sets\":{},\"compute_ms\":{:.1},\"full_sync_ms\":{:.1},\"full_commands\":{},\"incremental_sync_ms\":{:.2},\"incremental_commands\":{}}}",
        table.chains.len(),
        table.sets.len(),
        compute.as_secs_f64() * 1000.0,
        full_total.as_secs_f64() * 1000.0,
        full.commands,
        incr_total.as_secs_f64() * 1000.0,
        incr.commands,
    );
    Ok(())
}
