//! What `mini images ls | push | rm | import` do against the cluster's registry: argument to
//! request mapping, the listing (catalog + tags + manifests) and its table.

use std::path::PathBuf;

use crate::client::RegistryClient;
use crate::push::{push_archive, PushedImage};
use crate::RegClientError;

/// One line of `mini images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// Manifest + config + layers (for an index: the index and its manifests).
    pub size: u64,
}

/// A registry reference as `mini images ls` prints it: `REPOSITORY:TAG` or `REPOSITORY@DIGEST`,
/// optionally prefixed by the registry's host. No docker normalisation: `default/app:v1` is the
/// repository `default/app` of this registry. Returns `(repository, tag_or_digest)`.
pub fn registry_ref(arg: &str, registry_host: &str) -> Result<(String, String), RegClientError> {
    let invalid = |reason: &str| RegClientError::Reference {
        reference: arg.to_string(),
        reason: reason.to_string(),
    };
    let rest = arg.trim();
    let rest = rest
        .strip_prefix(registry_host)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(rest);
    let (repo, reference) = if let Some((repo, digest)) = rest.split_once('@') {
        let repo = strip_tag(repo);
        (repo.to_string(), digest.to_string())
    } else {
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        match rest[last_slash..].rfind(':') {
            Some(i) => (
                rest[..last_slash + i].to_string(),
                rest[last_slash + i + 1..].to_string(),
            ),
            None => {
                return Err(invalid(
                    "name a tag (REPOSITORY:TAG) or a digest (REPOSITORY@sha256:...)",
                ))
            }
        }
    };
    check_repository(&repo).map_err(|r| invalid(&r))?;
    if reference.is_empty() {
        return Err(invalid("empty tag or digest"));
    }
    if let Some((algo, hex)) = reference.split_once(':') {
        if algo != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("digests are sha256:<64 hex digits>"));
        }
    }
    Ok((repo, reference))
}

fn strip_tag(repo: &str) -> &str {
    let last_slash = repo.rfind('/').map(|i| i + 1).unwrap_or(0);
    match repo[last_slash..].rfind(':') {
        Some(i) => &repo[..last_slash + i],
        None => repo,
    }
}

/// The distribution grammar, loosely: lowercase components, no empty ones, at most 255 bytes.
/// The first component may carry a port (mirror repositories like `localhost:5000/x`).
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > 255 {
        return Err("repository names are 1 to 255 characters".into());
    }
    for (i, component) in repo.split('/').enumerate() {
        let component = if i == 0 {
            component
                .split_once(':')
                .map(|(h, _)| h)
                .unwrap_or(component)
        } else {
            component
        };
        let ok = !component.is_empty()
            && component != ".."
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(format!(
                "repository component {component:?} must be lowercase letters, digits and . _ -"
            ));
        }
    }
    Ok(())
}

/// The repository `mini images ls REPOSITORY` lists (the registry's host prefix removed).
pub fn ls_repository(arg: &str, registry_host: &str) -> Result<String, RegClientError> {
    let repo = arg
        .trim()
        .strip_prefix(registry_host)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(arg.trim());
    check_repository(repo).map_err(|reason| RegClientError::Reference {
        reference: arg.to_string(),
        reason,
    })?;
    Ok(repo.to_string())
}

/// Size of the image a manifest describes: the manifest, its config and layers, or for an index
/// the index and the sizes of the manifests it lists.
fn image_size(manifest: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(manifest).unwrap_or_default();
    let size_of = |v: &serde_json::Value| v.get("size").and_then(|s| s.as_u64()).unwrap_or(0);
    let mut total = manifest.len() as u64;
    if let Some(config) = value.get("config") {
        total += size_of(config);
    }
    for key in ["layers", "manifests"] {
        if let Some(items) = value.get(key).and_then(|v| v.as_array()) {
            total += items.iter().map(size_of).sum::<u64>();
        }
    }
    total
}

/// Every tag of `repository` (or of every repository in the catalog) with digest and size.
pub async fn list_images(
    client: &RegistryClient,
    repository: Option<&str>,
) -> Result<Vec<ImageRow>, RegClientError> {
    let repos = match repository {
        Some(r) => vec![r.to_string()],
        None => client.catalog().await?,
    };
    let mut rows = Vec::new();
    for repo in repos {
        let mut tags = client.tags(&repo).await?;
        tags.sort();
        for tag in tags {
            let (info, body) = match client.get_manifest(&repo, &tag).await {
                Ok(found) => found,
                // Deleted between the tag list and now.
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e),
            };
            rows.push(ImageRow {
                repository: repo.clone(),
                tag,
                digest: info.digest,
                size: image_size(&body),
            });
        }
    }
    Ok(rows)
}

/// `1536` → `1.5 KiB`; bytes below 1 KiB as `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The `mini images ls` table: REPOSITORY TAG DIGEST SIZE, digests shortened to 12 hex digits.
pub fn format_table(rows: &[ImageRow]) -> String {
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let short = r
                .digest
                .split_once(':')
                .map(|(algo, hex)| format!("{algo}:{}", &hex[..hex.len().min(12)]))
                .unwrap_or_else(|| r.digest.clone());
            [
                r.repository.clone(),
                r.tag.clone(),
                short,
                human_size(r.size),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "DIGEST", "SIZE"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(cells.iter()) {
        let line = format!(
            "{:<w0$}   {:<w1$}   {:<w2$}   {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Pushes each tarball in turn (`mini images push` and `mini images import`).
pub async fn push_files(
    client: &RegistryClient,
    files: &[PathBuf],
) -> Result<Vec<PushedImage>, RegClientError> {
    let host = client.host().to_string();
    let mut out = Vec::new();
    for file in files {
        out.extend(push_archive(client, file, &host).await?);
    }
    Ok(out)
}

/// Deletes each reference (`mini images rm`): a tag, or a manifest by digest (which removes
/// every tag pointing at it). Returns what was deleted, as `repository:tag` / `repository@digest`.
pub async fn remove(
    client: &RegistryClient,
    references: &[String],
) -> Result<Vec<String>, RegClientError> {
    let host = client.host().to_string();
    let targets = references
        .iter()
        .map(|r| registry_ref(r, &host))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (repo, reference) in targets {
        match client.delete_manifest(&repo, &reference).await {
            Ok(()) => {}
            Err(e)
                if !reference.contains(':')
                    && (matches!(e.code(), Some("UNSUPPORTED") | Some("DIGEST_INVALID"))
                        || e.status() == Some(405)) =>
            {
                return Err(RegClientError::Protocol {
                    what: format!("deleting tag {repo}:{reference}"),
                    reason: format!(
                        "the registry cannot delete a tag alone (it answered {}); delete the manifest with `mini images rm {repo}@<digest>` (removes all its tags)",
                        e.code().map(str::to_string).or(e.status().map(|s| format!("HTTP {s}"))).unwrap_or_default()
                    ),
                });
            }
            Err(e) => return Err(e),
        }
        let sep = if reference.contains(':') { '@' } else { ':' };
        out.push(format!("{repo}{sep}{reference}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "10.0.0.1:6443";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn registry_ref_namespace_repository_with_tag_is_not_normalised() {
        assert_eq!(
            registry_ref("default/app:v1", HOST).unwrap(),
            ("default/app".into(), "v1".into())
        );
    }

    #[test]
    fn registry_ref_own_host_prefix_is_stripped() {
        assert_eq!(
            registry_ref("10.0.0.1:6443/team/web:2", HOST).unwrap(),
            ("team/web".into(), "2".into())
        );
    }

    #[test]
    fn registry_ref_mirror_repository_with_digest_and_tag_uses_digest() {
        assert_eq!(
            registry_ref(&format!("docker.io/library/busybox:1@{DIGEST}"), HOST).unwrap(),
            ("docker.io/library/busybox".into(), DIGEST.into())
        );
    }

    #[test]
    fn registry_ref_mirror_host_with_port_keeps_port_in_repository() {
        assert_eq!(
            registry_ref("localhost:5000/x:1", HOST).unwrap(),
            ("localhost:5000/x".into(), "1".into())
        );
    }

    #[test]
    fn registry_ref_without_tag_is_error() {
        let err = registry_ref("default/app", HOST).unwrap_err();
        assert!(err.to_string().contains("name a tag"), "{err}");
    }

    #[test]
    fn registry_ref_uppercase_or_bad_digest_is_error() {
        assert!(registry_ref("Default/app:v1", HOST).is_err());
        assert!(registry_ref("default/app@sha256:xyz", HOST).is_err());
        assert!(registry_ref("default/../x:1", HOST).is_err());
    }

    #[test]
    fn ls_repository_strips_host_and_validates() {
        assert_eq!(
            ls_repository("10.0.0.1:6443/default/app", HOST).unwrap(),
            "default/app"
        );
        assert_eq!(ls_repository("default/app", HOST).unwrap(), "default/app");
        assert!(ls_repository("a//b", HOST).is_err());
    }

    #[test]
    fn human_size_units_switch_at_1024() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(200 * 1024 * 1024), "200 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn format_table_aligns_columns_and_shortens_digest() {
        let rows = vec![
            ImageRow {
                repository: "default/app".into(),
                tag: "v1".into(),
                digest: DIGEST.into(),
                size: 2048,
            },
            ImageRow {
                repository: "docker.io/library/busybox".into(),
                tag: "latest".into(),
                digest: DIGEST.into(),
                size: 100,
            },
        ];
        let table = format_table(&rows);
        let expected = "\
REPOSITORY                  TAG      DIGEST                SIZE
default/app                 v1       sha256:0123456789ab   2.0 KiB
docker.io/library/busybox   latest   sha256:0123456789ab   100 B
";
        assert_eq!(table, expected);
    }

    #[test]
    fn format_table_no_rows_prints_header_only() {
        assert_eq!(format_table(&[]), "REPOSITORY   TAG   DIGEST   SIZE\n");
    }

    #[test]
    fn image_size_manifest_adds_config_and_layers() {
        let m = br#"{"config":{"size":10},"layers":[{"size":100},{"size":1000}]}"#;
        assert_eq!(image_size(m), m.len() as u64 + 1110);
        let i = br#"{"manifests":[{"size":7},{"size":8}]}"#;
        assert_eq!(image_size(i), i.len() as u64 + 15);
    }
}

/// The API path of `mini commit`: `POST pods/<pod>/commit` with the container and the new
/// image's repository and tag (`IMAGE` as `mini images ls` names it, `REPOSITORY:TAG`,
/// optionally with this registry's host in front). A digest is refused: a commit makes a tag.
pub fn commit_request_path(
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    image: &str,
    registry_host: &str,
) -> Result<String, RegClientError> {
    let (repository, tag) = registry_ref(image, registry_host)?;
    if tag.contains(':') {
        return Err(RegClientError::Reference {
            reference: image.to_string(),
            reason: "a commit creates a tag: give REPOSITORY:TAG, not a digest".into(),
        });
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(c) = container.filter(|c| !c.is_empty()) {
        query.append_pair("container", c);
    }
    query.append_pair("repository", &repository);
    query.append_pair("tag", &tag);
    Ok(format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/commit?{}",
        query.finish()
    ))
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    #[test]
    fn commit_request_path_with_container_and_host_prefix() {
        let path = commit_request_path(
            "default",
            "web-1",
            Some("app"),
            "10.0.0.1:6443/default/app:patched",
            "10.0.0.1:6443",
        )
        .unwrap();
        assert_eq!(
            path,
            "/api/v1/namespaces/default/pods/web-1/commit?container=app&repository=default%2Fapp&tag=patched"
        );
    }

    #[test]
    fn commit_request_path_without_tag_is_an_error() {
        assert!(commit_request_path("ns", "p", None, "ns/tool", "h:1").is_err());
        let path = commit_request_path("ns", "p", None, "ns/tool:1", "h:1").unwrap();
        assert!(path.ends_with("?repository=ns%2Ftool&tag=1"), "{path}");
    }

    #[test]
    fn commit_request_path_digest_is_an_error() {
        let digest = format!("ns/tool@sha256:{}", "a".repeat(64));
        assert!(commit_request_path("ns", "p", None, &digest, "h:1").is_err());
    }
}
