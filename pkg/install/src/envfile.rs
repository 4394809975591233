//! The units' environment files (`/etc/systemd/system/<unit>.env`): which variables belong in
//! them, and reading and writing them in the syntax systemd's `EnvironmentFile=` accepts.

use std::collections::BTreeMap;

/// Variables of the installer itself that describe one run, never the service: not recorded.
pub const TRANSIENT: &[&str] = &[
    "MINI_SKIP_START",
    "MINI_SKIP_ENABLE",
    "MINI_BINARY",
    "MINI_BINARY_SHA256",
    "MINI_BUNDLE",
];

/// Proxy variables handed to the service (either case).
const PROXY: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];

/// Whether a variable of the installer's environment belongs in the env file: `MINI_*` (but not
/// the [`TRANSIENT`] ones) and the proxy variables.
pub fn is_recorded(name: &str) -> bool {
    if TRANSIENT.contains(&name) {
        return false;
    }
    name.starts_with("MINI_") || PROXY.contains(&name.to_ascii_uppercase().as_str())
}

/// Parses an environment file: `NAME=value` lines, `#`/`;` comments, values bare, in single
/// quotes or in double quotes (with `\"`, `\\`, `\$` and `` \` `` escapes), as systemd reads them.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        vars.insert(name.trim().to_string(), unquote(value.trim()));
    }
    vars
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let mut out = String::new();
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    value.to_string()
}

/// Writes the variables, sorted, each value in double quotes with the characters systemd
/// treats specially escaped; [`parse`] reads back exactly what went in.
pub fn render(vars: &BTreeMap<String, String>) -> String {
    let mut out = String::from("# written by `mini install`; re-running it keeps these settings\n");
    for (name, value) in vars {
        let mut quoted = String::with_capacity(value.len() + 2);
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        out.push_str(&format!("{name}=\"{quoted}\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_recorded_mini_and_proxy_variables_only() {
        assert!(is_recorded("MINI_TOKEN"));
        assert!(is_recorded("https_proxy"));
        assert!(is_recorded("NO_PROXY"));
        assert!(!is_recorded("MINI_SKIP_START"));
        assert!(!is_recorded("MINI_BINARY"));
        assert!(!is_recorded("PATH"));
        assert!(!is_recorded("HOME"));
    }

    #[test]
    fn render_then_parse_round_trips_special_characters() {
        let mut vars = BTreeMap::new();
        vars.insert(
            "MINI_EXEC".to_string(),
            "--node-label a=b \"$x\" \\ `y`".to_string(),
        );
        vars.insert(
            "MINI_TOKEN".to_string(),
            "K10abc::server:s3cret".to_string(),
        );
        vars.insert("MINI_EMPTY".to_string(), String::new());
        assert_eq!(parse(&render(&vars)), vars);
    }

    #[test]
    fn parse_hand_written_file_reads_bare_and_quoted_values() {
        let vars = parse(
            "# c\n; c\nMINI_A=bare\nMINI_B='single $x'\nexport MINI_C=\"d\\\"q\"\nnot a line\n",
        );
        assert_eq!(vars["MINI_A"], "bare");
        assert_eq!(vars["MINI_B"], "single $x");
        assert_eq!(vars["MINI_C"], "d\"q");
        assert_eq!(vars.len(), 3);
    }
}
