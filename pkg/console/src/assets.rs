//! The embedded assets: their bytes, content types, a version (a hash of all of them) that
//! names the long-cached URLs, and each one gzipped once when the console is installed.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use sha2::{Digest, Sha256};

/// Every file of `assets/` as `(path, bytes)`; `index.html` is the page every route loads.
pub const ASSET_FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../assets/index.html")),
    ("style.css", include_bytes!("../assets/style.css")),
    ("favicon.svg", include_bytes!("../assets/favicon.svg")),
    ("app.js", include_bytes!("../assets/app.js")),
    ("api.js", include_bytes!("../assets/api.js")),
    ("i18n.js", include_bytes!("../assets/i18n.js")),
    ("dom.js", include_bytes!("../assets/dom.js")),
    ("login.js", include_bytes!("../assets/login.js")),
    ("overview.js", include_bytes!("../assets/overview.js")),
    ("nodes.js", include_bytes!("../assets/nodes.js")),
    ("nodemetrics.js", include_bytes!("../assets/nodemetrics.js")),
    ("kube.js", include_bytes!("../assets/kube.js")),
    ("table.js", include_bytes!("../assets/table.js")),
    ("dialog.js", include_bytes!("../assets/dialog.js")),
    ("apps.js", include_bytes!("../assets/apps.js")),
    ("deploy.js", include_bytes!("../assets/deploy.js")),
    ("workload.js", include_bytes!("../assets/workload.js")),
    ("history.js", include_bytes!("../assets/history.js")),
    ("yamledit.js", include_bytes!("../assets/yamledit.js")),
    ("pods.js", include_bytes!("../assets/pods.js")),
    ("logs.js", include_bytes!("../assets/logs.js")),
    ("terminal.js", include_bytes!("../assets/terminal.js")),
    ("chart.js", include_bytes!("../assets/chart.js")),
    ("loadtests.js", include_bytes!("../assets/loadtests.js")),
    ("resources.js", include_bytes!("../assets/resources.js")),
    ("logsearch.js", include_bytes!("../assets/logsearch.js")),
    ("registry.js", include_bytes!("../assets/registry.js")),
    ("accounts.js", include_bytes!("../assets/accounts.js")),
    // pinned third-party files, byte for byte as published (vendor/SHA256SUMS)
    (
        "vendor/xterm-5.5.0.js",
        include_bytes!("../vendor/xterm-5.5.0.js"),
    ),
    (
        "vendor/xterm-5.5.0.css",
        include_bytes!("../vendor/xterm-5.5.0.css"),
    ),
    (
        "vendor/addon-canvas-0.7.0.js",
        include_bytes!("../vendor/addon-canvas-0.7.0.js"),
    ),
    (
        "vendor/addon-fit-0.10.0.js",
        include_bytes!("../vendor/addon-fit-0.10.0.js"),
    ),
    (
        "vendor/js-yaml-4.1.0.mjs",
        include_bytes!("../vendor/js-yaml-4.1.0.mjs"),
    ),
    (
        "vendor/uplot-1.6.32.mjs",
        include_bytes!("../vendor/uplot-1.6.32.mjs"),
    ),
    (
        "vendor/uplot-1.6.32.css",
        include_bytes!("../vendor/uplot-1.6.32.css"),
    ),
];

/// The placeholder in `index.html` replaced by the assets' version.
const VERSION_MARK: &str = "__VERSION__";

/// One asset ready to send.
#[derive(Debug, Clone)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: Bytes,
    /// The gzipped body, when that is smaller.
    pub gzip: Option<Bytes>,
    /// A strong ETag (quoted).
    pub etag: String,
}

/// All assets, keyed by path, plus the index page.
#[derive(Debug, Clone)]
pub struct Assets {
    /// A hash of every asset: the `/console/v/<version>/` URLs change whenever any file does.
    pub version: String,
    pub index: Asset,
    pub files: BTreeMap<&'static str, Asset>,
}

/// The content type of `path` by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn prepare_one(path: &str, body: Bytes) -> Asset {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let gzip = encoder
        .write_all(&body)
        .and_then(|()| encoder.finish())
        .ok()
        .filter(|z| z.len() < body.len())
        .map(Bytes::from);
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..20]);
    Asset {
        content_type: content_type(path),
        body,
        gzip,
        etag,
    }
}

impl Assets {
    /// Hashes, versions and compresses the embedded files.
    pub fn prepare() -> Self {
        Self::from_files(ASSET_FILES)
    }

    /// The same from any file set (tests).
    pub fn from_files(list: &[(&'static str, &'static [u8])]) -> Self {
        let mut hasher = Sha256::new();
        for (path, bytes) in list {
            hasher.update(path.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        let version = hex::encode(hasher.finalize())[..12].to_string();
        let mut files = BTreeMap::new();
        let mut index = None;
        for (path, bytes) in list {
            if *path == "index.html" {
                let html = String::from_utf8_lossy(bytes).replace(VERSION_MARK, &version);
                index = Some(prepare_one(path, Bytes::from(html)));
            } else {
                files.insert(*path, prepare_one(path, Bytes::from_static(bytes)));
            }
        }
        let index = index.unwrap_or_else(|| prepare_one("index.html", Bytes::new()));
        Assets {
            version,
            index,
            files,
        }
    }

    /// Bytes sent for every asset, gzipped where that is smaller.
    pub fn total_gzipped(&self) -> usize {
        std::iter::once(&self.index)
            .chain(self.files.values())
            .map(|a| a.gzip.as_ref().unwrap_or(&a.body).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_known_extensions_match() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[test]
    fn prepare_index_has_version_filled_in() {
        let assets = Assets::prepare();
        let html = String::from_utf8_lossy(&assets.index.body);
        assert!(!html.contains(VERSION_MARK));
        assert!(html.contains(&format!("/console/v/{}/app.js", assets.version)));
    }

    #[test]
    fn prepare_every_file_present_and_referenced_module_exists() {
        let assets = Assets::prepare();
        for (path, asset) in &assets.files {
            assert!(!asset.body.is_empty(), "{path} is empty");
            if path.ends_with(".js") && !path.starts_with("vendor/") {
                let text = String::from_utf8_lossy(&asset.body);
                for line in text.lines().filter(|l| l.starts_with("import ")) {
                    let target = line
                        .split(['\'', '"'])
                        .nth(1)
                        .and_then(|t| t.strip_prefix("./"))
                        .unwrap_or_else(|| panic!("{path}: import not relative: {line}"));
                    assert!(assets.files.contains_key(target), "{path} imports {target}");
                }
            }
        }
    }

    #[test]
    fn prepare_total_gzipped_within_budget() {
        let total = Assets::prepare().total_gzipped();
        assert!(total < 400 * 1024, "assets are {total} bytes gzipped");
    }

    #[test]
    fn version_changes_with_content() {
        let a = Assets::from_files(&[("index.html", b"__VERSION__"), ("a.js", b"1")]);
        let b = Assets::from_files(&[("index.html", b"__VERSION__"), ("a.js", b"2")]);
        assert_ne!(a.version, b.version);
        assert_eq!(a.index.body, Bytes::from(a.version.clone()));
    }
}

#[cfg(test)]
mod dictionary_tests {
    use std::collections::BTreeSet;

    /// The keys of one dictionary (`const NAME = { ... };`) of `i18n.js`.
    fn keys(source: &str, name: &str) -> BTreeSet<String> {
        let start = source
            .find(&format!("const {name} = {{"))
            .unwrap_or_else(|| panic!("no dictionary {name}"));
        let body = &source[start..];
        let body = &body[..body.find("\n};").expect("dictionary ends")];
        body.lines()
            .skip(1)
            .filter_map(|l| l.trim().split_once(": "))
            .map(|(k, _)| k.trim_matches('\'').to_string())
            .collect()
    }

    fn i18n() -> String {
        String::from_utf8_lossy(include_bytes!("../assets/i18n.js")).into_owned()
    }

    #[test]
    fn dictionaries_english_and_chinese_have_the_same_keys() {
        let source = i18n();
        let en = keys(&source, "en");
        let zh = keys(&source, "zh");
        assert!(en.len() > 40);
        assert_eq!(
            en.symmetric_difference(&zh).collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
    }

    #[test]
    fn dictionaries_every_literal_key_used_exists() {
        let en = keys(&i18n(), "en");
        for (path, bytes) in super::ASSET_FILES {
            if !path.ends_with(".js") || path.starts_with("vendor/") {
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            for (at, _) in text.match_indices("t('") {
                let before = text[..at].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let key = text[at + 3..].split('\'').next().unwrap_or("");
                assert!(
                    en.contains(key),
                    "{path} uses t('{key}') missing from i18n.js"
                );
            }
        }
    }
}
