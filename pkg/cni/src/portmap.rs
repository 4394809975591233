//! `portmap`: hostPort mappings as nftables DNAT (and masquerade for hairpin and localhost
//! traffic when `snat`), in mini's own table `ip mini-portmap`. Each container gets two chains
//! (`dnat-<hash>`, `snat-<hash>`) jumped to from the table's base chains; DEL deletes the jumps
//! and the chains. Batches go through the `mini_sys::nft::Nft` trait.

use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::types::{CniError, CniResult, Command, CommonConf, Context};
use crate::Deps;

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "mini-portmap";
/// Base chains: (name, hook, priority). DNAT runs at dstnat (-100), masquerade at srcnat (100).
const BASE_CHAINS: &[(&str, &str, i32)] = &[
    ("prerouting", "prerouting", -100),
    ("output", "output", -100),
    ("postrouting", "postrouting", 100),
];

/// One `runtimeConfig.portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Deserialize)]
struct PortmapConf {
    #[serde(flatten)]
    common: CommonConf,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: RuntimeConfig,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

impl PortmapConf {
    fn check(&self) -> Result<(), CniError> {
        if self
            .external_set_mark_chain
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        {
            return Err(CniError::unsupported(
                "externalSetMarkChain: mini's portmap masquerades in its own nftables table",
            ));
        }
        if self.conditions_v4.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(CniError::unsupported(
                "conditionsV4: iptables match conditions do not apply to mini's nftables portmap",
            ));
        }
        for m in &self.runtime_config.port_mappings {
            if m.host_port == 0 || m.container_port == 0 {
                return Err(CniError::invalid_config(format!(
                    "port mapping {}->{}: ports must be 1-65535",
                    m.host_port, m.container_port
                )));
            }
            protocol(m)?;
            if !m.host_ip.is_empty()
                && !m.host_ip.contains(':')
                && m.host_ip.parse::<Ipv4Addr>().is_err()
            {
                return Err(CniError::invalid_config(format!(
                    "hostIP {:?} is not an address",
                    m.host_ip
                )));
            }
        }
        Ok(())
    }
}

fn protocol(m: &PortMapping) -> Result<&'static str, CniError> {
    match m.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => Ok("tcp"),
        "udp" => Ok("udp"),
        "sctp" => Ok("sctp"),
        other => Err(CniError::invalid_config(format!(
            "unknown port protocol {other:?}"
        ))),
    }
}

/// The per-container chain suffix: a hash of the network name and container id.
pub fn chain_suffix(network: &str, container_id: &str) -> String {
    let digest = Sha256::digest(format!("{network}\n{container_id}").as_bytes());
    hex::encode(&digest[..8])
}

fn matches(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn rule(chain: &str, expr: Vec<Value>, comment: &str) -> Value {
    json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr, "comment": comment}}})
}

/// The commands that install one container's mappings (after `teardown`).
pub fn setup_commands(
    network: &str,
    container_id: &str,
    container_ip: Ipv4Addr,
    mappings: &[PortMapping],
    snat: bool,
) -> Result<Vec<Value>, CniError> {
    let suffix = chain_suffix(network, container_id);
    let (dnat, masq) = (format!("dnat-{suffix}"), format!("snat-{suffix}"));
    let comment = format!("{network} {container_id}");
    let mut out = vec![json!({"add": {"table": {"family": FAMILY, "name": TABLE}}})];
    for (name, hook, prio) in BASE_CHAINS {
        out.push(
            json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name,
            "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}}}),
        );
    }
    out.push(json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": dnat}}}));
    let cip = container_ip.to_string();
    for m in mappings {
        let proto = protocol(m)?;
        let mut expr = Vec::new();
        if !m.host_ip.is_empty() && m.host_ip != "0.0.0.0" {
            expr.push(matches(payload("ip", "daddr"), json!(m.host_ip)));
        }
        expr.push(matches(payload(proto, "dport"), json!(m.host_port)));
        expr.push(json!({"dnat": {"addr": cip, "port": m.container_port}}));
        out.push(rule(&dnat, expr, &comment));
    }
    let to_local = matches(
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    );
    for base in ["prerouting", "output"] {
        out.push(rule(
            base,
            vec![to_local.clone(), json!({"jump": {"target": dnat}})],
            &comment,
        ));
    }
    if snat {
        out.push(json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": masq}}}));
        for m in mappings {
            let proto = protocol(m)?;
            // a pod reaching itself through its hostPort (hairpin), and the host's localhost
            for source in [
                json!(cip),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ] {
                out.push(rule(
                    &masq,
                    vec![
                        matches(payload("ip", "saddr"), source),
                        matches(payload("ip", "daddr"), json!(cip)),
                        matches(payload(proto, "dport"), json!(m.container_port)),
                        json!({"masquerade": null}),
                    ],
                    &comment,
                ));
            }
        }
        out.push(rule(
            "postrouting",
            vec![json!({"jump": {"target": masq}})],
            &comment,
        ));
    }
    Ok(out)
}

/// The commands that remove one container's jumps and chains, from a listing of the table
/// (`nft -j list table ip mini-portmap`); empty when nothing of it is there.
pub fn teardown_commands(listing: &Value, network: &str, container_id: &str) -> Vec<Value> {
    let suffix = chain_suffix(network, container_id);
    let ours = [format!("dnat-{suffix}"), format!("snat-{suffix}")];
    let items = listing
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for item in &items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let jumps_to_ours = rule
            .get("expr")
            .and_then(Value::as_array)
            .is_some_and(|expr| {
                expr.iter().any(|e| {
                    e.pointer("/jump/target")
                        .and_then(Value::as_str)
                        .is_some_and(|t| ours.iter().any(|o| o == t))
                })
            });
        if jumps_to_ours {
            if let (Some(chain), Some(handle)) = (rule.get("chain"), rule.get("handle")) {
                out.push(json!({"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "handle": handle}}}));
            }
        }
    }
    for item in &items {
        let Some(name) = item.pointer("/chain/name").and_then(Value::as_str) else {
            continue;
        };
        if ours.iter().any(|o| o == name) {
            out.push(json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}}));
            out.push(
                json!({"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}}),
            );
        }
    }
    out
}

async fn listing(deps: &Deps) -> Result<Option<Value>, CniError> {
    let text = deps
        .nft
        .list_table(FAMILY, TABLE)
        .await
        .map_err(|e| CniError::plugin("failed to list the portmap nftables table", e))?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| CniError::plugin("failed to read the portmap nftables listing", e))
    })
    .transpose()
}

async fn apply(deps: &Deps, commands: Vec<Value>) -> Result<(), CniError> {
    if commands.is_empty() {
        return Ok(());
    }
    let batch = json!({"nftables": commands}).to_string();
    deps.nft
        .apply(&batch)
        .await
        .map_err(|e| CniError::plugin("failed to program the hostPort nftables rules", e))
}

/// The container's first IPv4 address in a result (one on an interface inside a sandbox when
/// the result says which).
fn container_ipv4(result: &CniResult) -> Option<Ipv4Addr> {
    let in_sandbox = |ip: &&crate::types::IpConfig| {
        ip.interface
            .and_then(|i| result.interfaces.get(i))
            .is_some_and(|i| i.sandbox.is_some())
    };
    result
        .ips
        .iter()
        .filter(in_sandbox)
        .chain(result.ips.iter())
        .find_map(|ip| ip.ipv4())
        .map(|a| a.addr)
}

/// Lets DNAT to a pod work for connections from 127.0.0.1 (route_localnet on the interface
/// that routes to the pod), as the reference plugin does.
async fn enable_localnet(deps: &Deps, container_ip: Ipv4Addr) -> Result<(), CniError> {
    let source = deps
        .host
        .route_source_ip(container_ip.into())
        .map_err(|e| CniError::plugin("failed to find the route to the container", e))?;
    let link = deps.netlink.link_with_address(source).await.map_err(|e| {
        CniError::plugin(
            "failed to find the interface that routes to the container",
            e,
        )
    })?;
    if let Some(link) = link {
        deps.host
            .set_sysctl(&format!("net.ipv4.conf.{}.route_localnet", link.name), "1")
            .map_err(|e| CniError::plugin("failed to set route_localnet", e))?;
    }
    Ok(())
}

pub async fn run(deps: &Deps, ctx: &Context) -> Result<Option<Value>, CniError> {
    let conf: PortmapConf = crate::types::decode(&ctx.stdin)?;
    let version = conf.common.cni_version.clone();
    let mappings: Vec<PortMapping> = conf
        .runtime_config
        .port_mappings
        .iter()
        .filter(|m| !m.host_ip.contains(':'))
        .cloned()
        .collect();
    match ctx.command {
        Command::Add => {
            conf.check()?;
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::invalid_config(
                    "portmap must be called as a chained plugin (prevResult missing)",
                )
            })?;
            let prev = CniResult::from_value(prev)?;
            let out = Some(prev.to_json(&version));
            if mappings.is_empty() {
                return Ok(out);
            }
            let Some(ip) = container_ipv4(&prev) else {
                return Ok(out);
            };
            let snat = conf.snat.unwrap_or(true);
            let mut commands = match listing(deps).await? {
                Some(list) => teardown_commands(&list, &conf.common.name, &ctx.container_id),
                None => Vec::new(),
            };
            commands.extend(setup_commands(
                &conf.common.name,
                &ctx.container_id,
                ip,
                &mappings,
                snat,
            )?);
            apply(deps, commands).await?;
            if snat {
                enable_localnet(deps, ip).await?;
            }
            Ok(out)
        }
        Command::Del => {
            if let Some(list) = listing(deps).await? {
                apply(
                    deps,
                    teardown_commands(&list, &conf.common.name, &ctx.container_id),
                )
                .await?;
            }
            Ok(None)
        }
        Command::Check => {
            conf.check()?;
            if mappings.is_empty() {
                return Ok(None);
            }
            let chain = format!(
                "dnat-{}",
                chain_suffix(&conf.common.name, &ctx.container_id)
            );
            let present = listing(deps).await?.is_some_and(|list| {
                list.get("nftables")
                    .and_then(Value::as_array)
                    .is_some_and(|items| {
                        items.iter().any(|i| {
                            i.pointer("/chain/name").and_then(Value::as_str) == Some(chain.as_str())
                        })
                    })
            });
            if present {
                Ok(None)
            } else {
                Err(CniError::plugin(
                    "the container's hostPort chain is missing",
                    chain,
                ))
            }
        }
        Command::Status | Command::Gc | Command::Version => Ok(None),
    }
}
