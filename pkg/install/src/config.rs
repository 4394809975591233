//! Config files for `mini server` / `mini agent`: `/etc/mini/config.yaml` and the drop-ins in
//! `/etc/mini/config.yaml.d/*.yaml` (lexical order), whose keys are the long flag names, turned
//! into command-line arguments placed before the real ones.
//!
//! Precedence: command-line flags > config files > `MINI_*` environment variables. A
//! single-valued flag given on the command line replaces what the files say; a repeatable flag
//! (`node-label`, `tls-san`, ...) adds up: the files' values come first, then the command
//! line's (so labels in `/etc/mini/config.yaml` and in `MINI_EXEC` both apply). Across files a
//! later file replaces a single-valued flag and adds to a repeatable one.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The default config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/mini/config.yaml";
/// The flag naming another config file (also `MINI_CONFIG_FILE`).
pub const CONFIG_FLAG: &str = "config";

/// How a flag takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--flag` alone; `true`/`false` in a file.
    Switch,
    /// `--flag VALUE`, once.
    Value,
    /// `--flag VALUE`, repeatable; a list in a file.
    List,
}

/// One long flag of a subcommand, as the command line declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSpec {
    pub long: String,
    pub kind: FlagKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "config file {path}: unknown key {key:?} (keys are the long flags of `mini {subcommand}`, see `mini {subcommand} --help`)"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        subcommand: String,
    },
}

/// The config file and its drop-ins, in the order they apply. `explicit` is the `--config`
/// flag or `MINI_CONFIG_FILE`: then the file must exist; the default may be missing.
pub fn config_files(explicit: Option<&Path>) -> Result<Vec<PathBuf>, ConfigError> {
    let main = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
    let mut files = Vec::new();
    match std::fs::metadata(main) {
        Ok(_) => files.push(main.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: main.to_path_buf(),
                source,
            })
        }
    }
    let mut dropin_dir = main.as_os_str().to_owned();
    dropin_dir.push(".d");
    let dropin_dir = PathBuf::from(dropin_dir);
    match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: dropin_dir,
                source,
            })
        }
    }
    Ok(files)
}

/// The `--config FILE` / `--config=FILE` value on a command line (before any `--`).
pub fn config_flag(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The long flags a command line sets (before any `--`).
fn flags_on_command_line(args: &[OsString]) -> Vec<String> {
    let mut names = Vec::new();
    for arg in args {
        let s = arg.to_string_lossy();
        if s == "--" {
            break;
        }
        if let Some(rest) = s.strip_prefix("--") {
            names.push(rest.split('=').next().unwrap_or(rest).to_string());
        }
    }
    names
}

/// The arguments the files amount to, for `mini <subcommand>` with these flags, leaving out the
/// flags the real command line `cli` sets.
pub fn file_args(
    subcommand: &str,
    flags: &[FlagSpec],
    files: &[(PathBuf, String)],
    cli: &[OsString],
) -> Result<Vec<OsString>, ConfigError> {
    let overridden = flags_on_command_line(cli);
    // per flag, in first-seen order: its values
    let mut merged: BTreeMap<String, (FlagKind, Vec<String>)> = BTreeMap::new();
    let mut order = Vec::new();
    for (path, text) in files {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.clone(),
            reason,
        };
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
        let map = match value {
            serde_yaml_ng::Value::Null => continue,
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => return Err(invalid("expected a mapping of flag names to values".into())),
        };
        for (key, value) in map {
            let key = match key {
                serde_yaml_ng::Value::String(k) => k,
                other => return Err(invalid(format!("key {other:?} is not a flag name"))),
            };
            let spec = flags
                .iter()
                .find(|f| f.long == key && f.long != CONFIG_FLAG)
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.clone(),
                    key: key.clone(),
                    subcommand: subcommand.to_string(),
                })?;
            let values = scalars(&value).map_err(|reason| invalid(format!("{key}: {reason}")))?;
            if spec.kind != FlagKind::List && values.len() > 1 {
                return Err(invalid(format!("{key}: takes one value, got a list")));
            }
            if spec.kind == FlagKind::Switch {
                if let Some(v) = values.first() {
                    if v != "true" && v != "false" {
                        return Err(invalid(format!("{key}: expected true or false, got {v:?}")));
                    }
                }
            }
            if !merged.contains_key(&key) {
                order.push(key.clone());
            }
            let entry = merged.entry(key).or_insert((spec.kind, Vec::new()));
            if spec.kind == FlagKind::List {
                entry.1.extend(values);
            } else {
                entry.1 = values;
            }
        }
    }
    let mut args = Vec::new();
    for key in order {
        let (kind, values) = &merged[&key];
        if *kind != FlagKind::List && overridden.contains(&key) {
            continue;
        }
        for v in values {
            match kind {
                FlagKind::Switch if v == "true" => args.push(OsString::from(format!("--{key}"))),
                FlagKind::Switch => {}
                _ => args.push(OsString::from(format!("--{key}={v}"))),
            }
        }
    }
    Ok(args)
}

fn scalars(value: &serde_yaml_ng::Value) -> Result<Vec<String>, String> {
    use serde_yaml_ng::Value;
    let one = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err("values are scalars or lists of scalars".to_string()),
        }
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

/// `args` (`mini <subcommand> <flags...>`) with the config files' arguments inserted after the
/// subcommand. `env_config` is `MINI_CONFIG_FILE`; `flags_of` gives a subcommand's flags, or
/// `None` for subcommands that read no config file (everything but `server` and `agent`).
pub fn with_config_files(
    args: Vec<OsString>,
    env_config: Option<&OsStr>,
    flags_of: impl Fn(&str) -> Option<Vec<FlagSpec>>,
) -> Result<Vec<OsString>, ConfigError> {
    let Some(sub) = args.get(1).and_then(|s| s.to_str()) else {
        return Ok(args);
    };
    let Some(flags) = flags_of(sub) else {
        return Ok(args);
    };
    let cli = &args[2..];
    if cli.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(args);
    }
    let explicit = config_flag(cli).or_else(|| env_config.map(PathBuf::from));
    let mut files = Vec::new();
    for path in config_files(explicit.as_deref())? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        files.push((path, text));
    }
    let inserted = file_args(sub, &flags, &files, cli)?;
    let mut out = Vec::with_capacity(args.len() + inserted.len());
    out.extend_from_slice(&args[..2]);
    out.extend(inserted);
    out.extend_from_slice(cli);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Vec<FlagSpec> {
        [
            ("node-label", FlagKind::List),
            ("tls-san", FlagKind::List),
            ("node-name", FlagKind::Value),
            ("https-listen-port", FlagKind::Value),
            ("disable-agent", FlagKind::Switch),
            ("config", FlagKind::Value),
        ]
        .into_iter()
        .map(|(l, k)| FlagSpec {
            long: l.into(),
            kind: k,
        })
        .collect()
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn file(name: &str, text: &str) -> (PathBuf, String) {
        (PathBuf::from(name), text.to_string())
    }

    #[test]
    fn file_args_scalars_lists_and_switches_become_flags() {
        let files = [file(
            "/etc/mini/config.yaml",
            "node-label: [a=b, c=d]\ntls-san: x\ndisable-agent: true\nhttps-listen-port: 7443\n",
        )];
        let args = file_args("server", &flags(), &files, &[]).unwrap();
        assert_eq!(
            args,
            os(&[
                "--node-label=a=b",
                "--node-label=c=d",
                "--tls-san=x",
                "--disable-agent",
                "--https-listen-port=7443"
            ])
        );
    }

    #[test]
    fn file_args_switch_false_adds_nothing() {
        let files = [file("c.yaml", "disable-agent: false\n")];
        assert!(file_args("server", &flags(), &files, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn file_args_dropins_append_lists_and_replace_values() {
        let files = [
            file("c.yaml", "node-label: [a=b]\nnode-name: one\n"),
            file("c.yaml.d/10.yaml", "node-label: c=d\nnode-name: two\n"),
        ];
        let args = file_args("server", &flags(), &files, &[]).unwrap();
        assert_eq!(
            args,
            os(&["--node-label=a=b", "--node-label=c=d", "--node-name=two"])
        );
    }

    #[test]
    fn file_args_command_line_value_replaces_file_value_and_lists_add_up() {
        let files = [file(
            "c.yaml",
            "node-label: [a=b]\nnode-name: one\ntls-san: x\n",
        )];
        let cli = os(&["--node-label", "z=y", "--node-name=cli"]);
        let args = file_args("server", &flags(), &files, &cli).unwrap();
        assert_eq!(args, os(&["--node-label=a=b", "--tls-san=x"]));
    }

    #[test]
    fn file_args_unknown_key_names_key_and_file() {
        let files = [file(
            "/etc/mini/config.yaml.d/20-x.yaml",
            "node-lable: a=b\n",
        )];
        let err = file_args("agent", &flags(), &files, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"node-lable\""), "{msg}");
        assert!(msg.contains("/etc/mini/config.yaml.d/20-x.yaml"), "{msg}");
        assert!(msg.contains("mini agent"), "{msg}");
    }

    #[test]
    fn file_args_config_key_inside_a_file_is_unknown() {
        let files = [file("c.yaml", "config: /other.yaml\n")];
        assert!(matches!(
            file_args("server", &flags(), &files, &[]),
            Err(ConfigError::UnknownKey { .. })
        ));
    }

    #[test]
    fn file_args_list_for_single_value_flag_is_an_error() {
        let files = [file("c.yaml", "node-name: [a, b]\n")];
        assert!(file_args("server", &flags(), &files, &[])
            .unwrap_err()
            .to_string()
            .contains("takes one value"));
    }

    #[test]
    fn file_args_empty_file_adds_nothing() {
        let files = [file("c.yaml", "")];
        assert!(file_args("server", &flags(), &files, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn with_config_files_explicit_file_and_dropins_are_inserted_after_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("c.yaml");
        std::fs::write(&main, "node-name: base\nnode-label: [a=b]\n").unwrap();
        let dropins = dir.path().join("c.yaml.d");
        std::fs::create_dir(&dropins).unwrap();
        std::fs::write(dropins.join("20-b.yaml"), "node-label: [z=2]\n").unwrap();
        std::fs::write(dropins.join("10-a.yaml"), "node-label: [y=1]\n").unwrap();
        std::fs::write(dropins.join("README"), "not yaml: [").unwrap();
        let args = os(&[
            "mini",
            "server",
            "--config",
            main.to_str().unwrap(),
            "--tls-san=q",
        ]);
        let out = with_config_files(args, None, |s| (s == "server").then(flags)).unwrap();
        assert_eq!(
            out,
            os(&[
                "mini",
                "server",
                "--node-name=base",
                "--node-label=a=b",
                "--node-label=y=1",
                "--node-label=z=2",
                "--config",
                main.to_str().unwrap(),
                "--tls-san=q"
            ])
        );
    }

    #[test]
    fn with_config_files_missing_explicit_file_is_an_error() {
        let args = os(&["mini", "agent"]);
        let err = with_config_files(args, Some(OsStr::new("/nonexistent/mini.yaml")), |_| {
            Some(flags())
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mini.yaml"));
    }

    #[test]
    fn with_config_files_other_subcommands_are_untouched() {
        let args = os(&["mini", "images", "import", "x.tar"]);
        let out = with_config_files(args.clone(), None, |s| {
            matches!(s, "server" | "agent").then(flags)
        })
        .unwrap();
        assert_eq!(out, args);
    }
}
