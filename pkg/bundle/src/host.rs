//! The host's package manager, behind [`PackageHost`]: [`DebianHost`] runs apt-get, apt-cache
//! and dpkg; tests use a fake.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BundleError;

/// What bundles need from the package manager.
pub trait PackageHost: Send + Sync {
    /// Direct dependencies (`Depends:`/`Pre-Depends:`) of the package `name`.
    fn depends(&self, name: &str) -> Result<Vec<String>, BundleError>;
    /// Whether every Debian install has the package: Essential or Protected, priority required or
    /// important, or a direct dependency of an installed Essential package (libc6, say).
    fn is_base(&self, name: &str) -> Result<bool, BundleError>;
    /// Puts the `.deb` of each package in `dir`; returns the files.
    fn download(&self, names: &[String], dir: &Path) -> Result<Vec<PathBuf>, BundleError>;
    /// Whether the package is installed.
    fn installed(&self, name: &str) -> bool;
    /// Installs the `.deb` files.
    fn install_debs(&self, debs: &[PathBuf]) -> Result<(), BundleError>;
}

/// Debian/Ubuntu through apt-get, apt-cache and dpkg.
#[derive(Debug, Default, Clone, Copy)]
pub struct DebianHost;

fn run(cmd: &mut Command, what: &str) -> Result<String, BundleError> {
    let out = cmd
        .output()
        .map_err(|e| BundleError::Packages(format!("{what}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(BundleError::Packages(format!("{what} failed: {last}")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The package names of a `Depends:` value (alternatives: the first one; versions dropped).
pub fn parse_depends(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|alt| alt.split('|').next())
        .map(|d| {
            d.split(['(', ':', '['])
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

fn field<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

impl PackageHost for DebianHost {
    fn depends(&self, name: &str) -> Result<Vec<String>, BundleError> {
        let show = run(
            Command::new("apt-cache").args(["show", "--no-all-versions", name]),
            &format!("apt-cache show {name}"),
        )?;
        let mut deps = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            if let Some(v) = field(&show, key) {
                deps.extend(parse_depends(v));
            }
        }
        Ok(deps)
    }

    fn is_base(&self, name: &str) -> Result<bool, BundleError> {
        let show = run(
            Command::new("apt-cache").args(["show", "--no-all-versions", name]),
            &format!("apt-cache show {name}"),
        )?;
        let flagged = field(&show, "Essential") == Some("yes")
            || field(&show, "Protected") == Some("yes")
            || matches!(field(&show, "Priority"), Some("required" | "important"));
        Ok(flagged || essential_dependencies().iter().any(|d| d == name))
    }

    fn download(&self, names: &[String], dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
        let mut missing = Vec::new();
        let mut found = Vec::new();
        // the apt cache first: an offline machine that installed them still has the files
        for name in names {
            match cached_deb(name) {
                Some(p) => found.push(p),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            run(
                Command::new("apt-get")
                    .arg("download")
                    .args(&missing)
                    .current_dir(dir),
                &format!("apt-get download {}", missing.join(" ")),
            )?;
            let entries = std::fs::read_dir(dir).map_err(|e| crate::io_err(dir, e))?;
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "deb") {
                    found.push(entry.path());
                }
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    fn installed(&self, name: &str) -> bool {
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", name])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed")
            })
    }

    fn install_debs(&self, debs: &[PathBuf]) -> Result<(), BundleError> {
        if debs.is_empty() {
            return Ok(());
        }
        run(
            Command::new("dpkg").arg("-i").args(debs),
            "dpkg -i (the bundle's packages)",
        )
        .map(|_| ())
    }
}

/// Direct dependencies of the installed Essential packages (read once).
fn essential_dependencies() -> &'static [String] {
    static DEPS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    DEPS.get_or_init(|| {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f", "${Essential}\t${Pre-Depends}, ${Depends}\n"])
            .output();
        let Ok(out) = out else { return Vec::new() };
        let mut deps: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("yes\t"))
            .flat_map(parse_depends)
            .collect();
        deps.sort();
        deps.dedup();
        deps
    })
}

/// The installed version's `.deb` in /var/cache/apt/archives, if apt kept it.
fn cached_deb(name: &str) -> Option<PathBuf> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version} ${Architecture}", name])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (version, arch) = text.trim().split_once(' ')?;
    // apt escapes ':' (epochs) as %3a in file names
    let file = format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"));
    let path = Path::new("/var/cache/apt/archives").join(file);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_depends_takes_names_and_first_alternatives() {
        assert_eq!(
            parse_depends("libc6 (>= 2.34), libseccomp2 (>= 2.5.0), runc | crun:any"),
            ["libc6", "libseccomp2", "runc"]
        );
        assert!(parse_depends("").is_empty());
    }

    #[test]
    fn field_reads_a_control_field() {
        let rec = "Package: runc\nPriority: optional\nDepends: libc6\n";
        assert_eq!(field(rec, "Priority"), Some("optional"));
        assert_eq!(field(rec, "Depends"), Some("libc6"));
        assert_eq!(field(rec, "Pre-Depends"), None);
    }
}
