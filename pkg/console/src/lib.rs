//! The web console: a static single-page app (plain ES modules and CSS embedded in the binary)
//! served under `/console/` on the API server's HTTPS port. The assets need no authentication;
//! the app reads and changes the cluster through the ordinary Kubernetes API as the person who
//! logged in (session cookie, CSRF token), so their RBAC applies.

mod assets;
mod route;

pub use assets::{Asset, Assets, ASSET_FILES};
pub use route::{content_security_policy, ConsoleRoute, PREFIX};

use std::sync::Arc;

use mini_apiserver::ApiServer;

/// Serves the console on `api`'s port (assets prepared once, here).
pub fn install(api: &ApiServer) {
    api.add_streaming_route(Arc::new(ConsoleRoute::new(Assets::prepare())));
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The pinned libraries the console ships: each file listed, each with its licence.
    const PINNED: &[&str] = &[
        "xterm-5.5.0.js",
        "xterm-5.5.0.css",
        "xterm-5.5.0.LICENSE",
        "addon-canvas-0.7.0.js",
        "addon-canvas-0.7.0.LICENSE",
        "addon-fit-0.10.0.js",
        "addon-fit-0.10.0.LICENSE",
        "js-yaml-4.1.0.mjs",
        "js-yaml-4.1.0.LICENSE",
        "uplot-1.6.32.mjs",
        "uplot-1.6.32.css",
        "uplot-1.6.32.LICENSE",
    ];

    fn listed_sums() -> BTreeMap<String, String> {
        include_str!("../vendor/SHA256SUMS")
            .lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(hash, path)| (path.to_string(), hash.to_string()))
            .collect()
    }

    #[test]
    fn vendor_pinned_libraries_are_listed() {
        let listed = listed_sums();
        for file in PINNED {
            assert!(
                listed.contains_key(*file),
                "vendor/{file} missing from SHA256SUMS"
            );
        }
    }

    /// What the server sends under `vendor/` is byte for byte the listed file, and a licence
    /// of the same library (name and version) is listed next to it.
    #[test]
    fn vendor_served_assets_match_sha256sums_and_have_licences() {
        let listed = listed_sums();
        let served: Vec<_> = super::ASSET_FILES
            .iter()
            .filter_map(|(p, b)| p.strip_prefix("vendor/").map(|r| (r, b)))
            .collect();
        assert!(served.len() >= 4);
        for (rel, bytes) in served {
            assert_eq!(
                listed.get(rel),
                Some(&hex::encode(Sha256::digest(bytes))),
                "served vendor/{rel} differs from SHA256SUMS"
            );
            let stem = rel.rsplit_once('.').map_or(rel, |(s, _)| s);
            assert!(
                listed.contains_key(&format!("{stem}.LICENSE")),
                "vendor/{rel} has no {stem}.LICENSE"
            );
        }
    }

    /// Every file of `vendor/` but the list itself and its README is listed in `SHA256SUMS`
    /// with its hash, and every listed file exists.
    #[test]
    fn vendor_files_match_sha256sums() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let mut listed = BTreeMap::new();
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (hash, path) = line.split_once("  ").expect("`<sha256>  <path>` lines");
            listed.insert(path.to_string(), hash.to_string());
        }
        let mut found = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                if rel != "SHA256SUMS" && rel != "README.md" {
                    found.push(rel);
                }
            }
        }
        for rel in &found {
            let bytes = std::fs::read(dir.join(rel)).unwrap();
            let hash = hex::encode(Sha256::digest(&bytes));
            assert_eq!(
                listed.get(rel),
                Some(&hash),
                "vendor/{rel} is not listed with its sha256"
            );
        }
        for rel in listed.keys() {
            assert!(found.contains(rel), "vendor/{rel} is listed but missing");
        }
    }
}
