//! Which certificates a node may have renewed: only its own identity. Its client certificate
//! is always issued for the node it authenticated as (`system:node:<name>` in
//! `system:nodes`), whatever the request says; its serving certificate may name only that
//! node, the addresses and host names its Node object reports, and loopback.

use std::net::IpAddr;

use mini_rbac::UserInfo;
use serde_json::Value;

use crate::authorizer::node_identity;

/// The node whose certificates `user` may renew: its own, when it is a node with a name.
pub fn renewal_node(user: &UserInfo) -> Result<&str, String> {
    match node_identity(user) {
        Some(name) if !name.is_empty() => Ok(name),
        Some(_) => Err("a node credential that names no node cannot renew certificates".into()),
        None => Err(format!(
            "user {:?} is not a node: only a node's own client certificate may renew node certificates",
            user.name
        )),
    }
}

/// Whether `node` may have a serving certificate for `dns` and `ips`: each must be the node's
/// name, `localhost`, a loopback address, or an address of its Node object (`node_obj`'s
/// `status.addresses`). `Err` names the first name refused.
pub fn check_serving_names(
    node: &str,
    node_obj: Option<&Value>,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(), String> {
    let addresses: Vec<&str> = node_obj
        .and_then(|n| n["status"]["addresses"].as_array())
        .map(|list| list.iter().filter_map(|a| a["address"].as_str()).collect())
        .unwrap_or_default();
    for name in dns {
        let allowed = name.eq_ignore_ascii_case(node)
            || name.eq_ignore_ascii_case("localhost")
            || addresses.iter().any(|a| a.eq_ignore_ascii_case(name));
        if !allowed {
            return Err(format!(
                "node {node:?} may not have a serving certificate for {name:?}: not its name nor a host name of its Node"
            ));
        }
    }
    for ip in ips {
        let allowed = ip.is_loopback()
            || addresses
                .iter()
                .any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == *ip));
        if !allowed {
            return Err(format!(
                "node {node:?} may not have a serving certificate for {ip}: not an address of its Node"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn renewal_node_only_for_named_nodes() {
        assert_eq!(
            renewal_node(&user("system:node:n1", &["system:nodes"])),
            Ok("n1")
        );
        assert!(renewal_node(&user("system:node:n1", &[])).is_err());
        assert!(renewal_node(&user("system:node:", &["system:nodes"])).is_err());
        assert!(renewal_node(&user("system:admin", &["system:masters"])).is_err());
    }

    #[test]
    fn check_serving_names_own_addresses_pass_others_fail() {
        let node = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.5"},
            {"type": "Hostname", "address": "host-a"}]}});
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_serving_names(
            "n1",
            Some(&node),
            &["n1".into(), "host-a".into(), "localhost".into()],
            &[ip("10.0.0.5"), ip("127.0.0.1")]
        )
        .is_ok());
        assert!(check_serving_names("n1", Some(&node), &["n2".into()], &[]).is_err());
        assert!(check_serving_names("n1", Some(&node), &[], &[ip("10.0.0.6")]).is_err());
        assert!(check_serving_names("n1", None, &[], &[ip("10.0.0.5")]).is_err());
    }
}
