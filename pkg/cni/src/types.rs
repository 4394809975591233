//! The CNI wire types: the error JSON, the result JSON in each supported spec version, the
//! environment of one invocation (`CNI_*`), and the config fields every plugin shares.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use mini_sys::netlink::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Spec versions whose config and result formats the plugins read and write.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version answered for VERSION and used for errors before a config was read.
pub const LATEST_VERSION: &str = "1.1.0";

/// Well-known error codes of the CNI spec.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific failures (netlink, nftables, allocation) use codes from 100 on.
    pub const PLUGIN: u32 = 100;
    /// host-local: no free address left in a range.
    pub const NO_ADDRESS: u32 = 101;
}

/// A CNI error: printed as `{"cniVersion","code","msg","details"}` on stdout, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// A plugin-specific failure (code 100): `msg` says what failed, `details` why.
    pub fn plugin(msg: impl Into<String>, details: impl std::fmt::Display) -> CniError {
        CniError::new(code::PLUGIN, msg, details.to_string())
    }

    pub fn invalid_config(details: impl Into<String>) -> CniError {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            details,
        )
    }

    pub fn unsupported(details: impl Into<String>) -> CniError {
        CniError::new(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            details,
        )
    }

    /// The error JSON for a config of version `version`.
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }

    /// Reads an error JSON printed by another plugin (a delegated IPAM plugin).
    pub fn from_json(value: &Value) -> Option<CniError> {
        Some(CniError {
            code: u32::try_from(value.get("code")?.as_u64()?).ok()?,
            msg: value.get("msg")?.as_str()?.to_string(),
            details: value
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }
}

/// The CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(value: &str) -> Option<Command> {
        Some(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// One invocation: the `CNI_*` environment and the config on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`, a path such as `/var/run/netns/cni-...`; `None` when unset or empty.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as `KEY=VALUE` pairs, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins are looked for.
    pub path: Vec<PathBuf>,
    pub stdin: Vec<u8>,
}

impl Context {
    /// Reads the invocation from an environment lookup (`std::env::var_os` in the binary) and
    /// the bytes of stdin; checks the variables the command needs, as libcni's skel does.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        stdin: Vec<u8>,
    ) -> Result<Context, CniError> {
        let value = |key: &str| get(key).filter(|v| !v.is_empty());
        let command_text = value("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "required env variables [CNI_COMMAND] missing",
                "",
            )
        })?;
        let command = Command::parse(&command_text).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND: {command_text}"),
                "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
            )
        })?;
        let needs: &[&str] = match command {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        let missing: Vec<&str> = needs
            .iter()
            .copied()
            .filter(|k| value(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
                "",
            ));
        }
        let args = value("CNI_ARGS")
            .map(|a| parse_cni_args(&a))
            .transpose()?
            .unwrap_or_default();
        Ok(Context {
            command,
            container_id: value("CNI_CONTAINERID").unwrap_or_default(),
            netns: value("CNI_NETNS").map(PathBuf::from),
            ifname: value("CNI_IFNAME").unwrap_or_default(),
            args,
            path: value("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            stdin,
        })
    }

    /// The value of one `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `K=V;K=V` (libcni's format for `CNI_ARGS`).
pub fn parse_cni_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_ENV,
                        "invalid CNI_ARGS",
                        format!("pair {pair:?} is not KEY=VALUE"),
                    )
                })
        })
        .collect()
}

/// The fields every plugin's config has (`cniVersion`, `name`, `type`), read first so errors
/// can be printed in the config's version.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// Decodes a plugin's config (code 6 when it is not the JSON expected).
pub fn decode<T: serde::de::DeserializeOwned>(stdin: &[u8]) -> Result<T, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "failed to decode the network configuration",
            e.to_string(),
        )
    })
}

/// Checks that `version` is one the plugins speak (code 1 otherwise).
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!(
                "config is {version:?}, plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// Whether `version` carries `"version"` in each IP config (0.3.x and 0.4.0 do, 1.x does not).
fn ips_carry_version(version: &str) -> bool {
    version.starts_with("0.")
}

/// Whether CHECK exists in `version` (0.4.0 and later).
pub fn supports_check(version: &str) -> bool {
    !version.starts_with("0.3") && !version.starts_with("0.2") && !version.starts_with("0.1")
}

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The network namespace path of an interface inside a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of a result (any family: results of other plugins may hold IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// `a.b.c.d/n`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into the result's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    pub fn v4(address: Ipv4Net, gateway: Option<Ipv4Addr>, interface: Option<usize>) -> Self {
        IpConfig {
            address: address.to_string(),
            gateway: gateway.map(|g| g.to_string()),
            interface,
        }
    }

    /// The address when it is IPv4.
    pub fn ipv4(&self) -> Option<Ipv4Net> {
        self.address.parse().ok()
    }

    /// The gateway when it is IPv4.
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.gateway.as_deref().and_then(|g| g.parse().ok())
    }
}

/// A route of a result or of an IPAM config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

impl Route {
    pub fn dst_v4(&self) -> Option<Ipv4Net> {
        self.dst.parse().ok()
    }

    pub fn gw_v4(&self) -> Option<Ipv4Addr> {
        self.gw.as_deref().and_then(|g| g.parse().ok())
    }
}

/// A result (`prevResult`, or what ADD prints) in the version-independent shape of 1.0.0.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Option<Value>,
}

impl CniResult {
    /// Reads a result of any supported version (a 0.x `"version"` field in the IPs is ignored).
    pub fn from_value(value: &Value) -> Result<CniResult, CniError> {
        serde_json::from_value(value.clone()).map_err(|e| {
            CniError::new(
                code::DECODE,
                "failed to decode the previous result",
                e.to_string(),
            )
        })
    }

    /// The result JSON in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut entry = Map::new();
                if ips_carry_version(version) {
                    let family = if ip.address.contains(':') { "6" } else { "4" };
                    entry.insert("version".into(), json!(family));
                }
                if let Some(index) = ip.interface {
                    entry.insert("interface".into(), json!(index));
                }
                entry.insert("address".into(), json!(ip.address));
                if let Some(gateway) = &ip.gateway {
                    entry.insert("gateway".into(), json!(gateway));
                }
                Value::Object(entry)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        if !self.interfaces.is_empty() {
            out.insert("interfaces".into(), json!(self.interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            out.insert("routes".into(), json!(self.routes));
        }
        out.insert(
            "dns".into(),
            self.dns
                .clone()
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_add_without_netns_is_invalid_env_code_4() {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some("ADD".to_string()),
            "CNI_CONTAINERID" => Some("c1".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            "CNI_PATH" => Some("/opt/cni/bin".to_string()),
            _ => None,
        };
        let err = Context::from_env(env, Vec::new()).expect_err("netns missing");
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
    }

    #[test]
    fn context_del_reads_args_and_path_without_netns() {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some("DEL".to_string()),
            "CNI_CONTAINERID" => Some("c1".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            "CNI_PATH" => Some("/a:/b".to_string()),
            "CNI_ARGS" => Some("IgnoreUnknown=1;K8S_POD_NAME=web".to_string()),
            "CNI_NETNS" => Some(String::new()),
            _ => None,
        };
        let ctx = Context::from_env(env, b"{}".to_vec()).expect("valid");
        assert_eq!(ctx.command, Command::Del);
        assert_eq!(ctx.netns, None);
        assert_eq!(ctx.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(ctx.arg("K8S_POD_NAME"), Some("web"));
    }

    #[test]
    fn result_to_json_0_4_0_has_ip_versions_and_1_0_0_has_none() {
        let result = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("02:00:00:00:00:01".into()),
                sandbox: Some("/var/run/netns/x".into()),
            }],
            ips: vec![IpConfig::v4(
                "10.42.1.2/24".parse().expect("cidr"),
                Some(Ipv4Addr::new(10, 42, 1, 1)),
                Some(0),
            )],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: None,
            }],
            dns: None,
        };
        let old = result.to_json("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        let new = result.to_json("1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["address"], "10.42.1.2/24");
        assert_eq!(new["ips"][0]["gateway"], "10.42.1.1");
        assert_eq!(new["ips"][0]["interface"], 0);
        assert_eq!(new["interfaces"][0]["sandbox"], "/var/run/netns/x");
        assert_eq!(new["dns"], json!({}));
        let back = CniResult::from_value(&old).expect("parse");
        assert_eq!(back.ips, result.ips);
    }

    #[test]
    fn check_version_unknown_is_code_1() {
        assert!(check_version("1.0.0").is_ok());
        assert!(check_version("0.3.1").is_ok());
        assert_eq!(
            check_version("0.2.0").expect_err("too old").code,
            code::INCOMPATIBLE_VERSION
        );
        assert!(!supports_check("0.3.1"));
        assert!(supports_check("1.0.0"));
    }

    #[test]
    fn error_json_round_trips() {
        let e = CniError::new(7, "bad", "why");
        let v = e.to_json("1.0.0");
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"})
        );
        assert_eq!(CniError::from_json(&v), Some(e));
    }
}
