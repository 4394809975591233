//! `loopback`: brings the namespace's `lo` up on ADD and down on DEL, as the reference plugin.

use std::sync::Arc;

use mini_sys::netlink::Netlink;
use serde_json::Value;

use crate::types::{CniError, CniResult, Command, CommonConf, Context, Interface, IpConfig};
use crate::Deps;

#[derive(Debug, serde::Deserialize)]
struct LoopbackConf {
    #[serde(flatten)]
    common: CommonConf,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

async fn netns_handle(deps: &Deps, ctx: &Context) -> Result<Option<Arc<dyn Netlink>>, CniError> {
    let Some(netns) = &ctx.netns else {
        return Ok(None);
    };
    match deps.netlink.in_netns(netns).await {
        Ok(handle) => Ok(Some(handle)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(CniError::plugin(
            format!("failed to open netns {}", netns.display()),
            e,
        )),
    }
}

pub async fn run(deps: &Deps, ctx: &Context) -> Result<Option<Value>, CniError> {
    let conf: LoopbackConf = crate::types::decode(&ctx.stdin)?;
    let version = conf.common.cni_version.clone();
    let ifname = if ctx.ifname.is_empty() {
        "lo"
    } else {
        &ctx.ifname
    };
    match ctx.command {
        Command::Add | Command::Check => {
            let netns = ctx.netns.as_ref().map(|p| p.display().to_string());
            let handle = netns_handle(deps, ctx).await?.ok_or_else(|| {
                CniError::plugin("failed to open netns", netns.clone().unwrap_or_default())
            })?;
            let link = handle
                .link_by_name(ifname)
                .await
                .map_err(|e| CniError::plugin(format!("failed to find {ifname:?}"), e))?
                .ok_or_else(|| {
                    CniError::plugin(format!("failed to find {ifname:?}"), "no such link")
                })?;
            if ctx.command == Command::Check {
                return if link.up {
                    Ok(None)
                } else {
                    Err(CniError::plugin("loopback interface is down", ifname))
                };
            }
            handle
                .set_link_up(link.index)
                .await
                .map_err(|e| CniError::plugin(format!("failed to set {ifname:?} up"), e))?;
            if let Some(prev) = &conf.prev_result {
                return Ok(Some(CniResult::from_value(prev)?.to_json(&version)));
            }
            let addresses = handle.addresses(link.index).await.map_err(|e| {
                CniError::plugin(format!("failed to read addresses of {ifname:?}"), e)
            })?;
            let result = CniResult {
                interfaces: vec![Interface {
                    name: ifname.to_string(),
                    mac: Some("00:00:00:00:00:00".into()),
                    sandbox: netns,
                }],
                ips: addresses
                    .into_iter()
                    .map(|a| IpConfig::v4(a, None, Some(0)))
                    .collect(),
                routes: Vec::new(),
                dns: None,
            };
            Ok(Some(result.to_json(&version)))
        }
        Command::Del => {
            // a namespace already gone (or never given) is not an error
            let Some(handle) = netns_handle(deps, ctx).await? else {
                return Ok(None);
            };
            if let Ok(Some(link)) = handle.link_by_name("lo").await {
                handle
                    .set_link_down(link.index)
                    .await
                    .map_err(|e| CniError::plugin("failed to set \"lo\" down", e))?;
            }
            Ok(None)
        }
        Command::Status | Command::Gc | Command::Version => Ok(None),
    }
}
