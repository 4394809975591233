//! The embedded registry's `mini server` flags (`--registry-*`) and `mini commit`: clap types
//! and the mapping onto `mini_server::RegistrySettings` and `mini_regclient`.

use std::time::Duration;

use crate::token_cmd::parse_ttl;

/// How the server's embedded OCI registry (under `/v2/` on the API port) keeps images.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Pull through and cache from an upstream registry for a mirrored host: `HOST=URL`
    /// (`quay.io=https://harbor.example.edu/quay-proxy`); `URL` alone is docker.io's upstream.
    /// Credentials go in the URL (`https://user:password@host`). Repeatable.
    #[arg(
        long = "registry-upstream",
        env = "MINI_REGISTRY_UPSTREAM",
        value_delimiter = ','
    )]
    pub registry_upstream: Vec<String>,
    /// Retention: keep only the newest N tags of each repository (tags the cluster still
    /// runs or may roll back to are always kept).
    #[arg(long, env = "MINI_REGISTRY_KEEP_TAGS")]
    pub registry_keep_tags: Option<usize>,
    /// Retention: drop tags pushed longer ago than this (e.g. 30d), unless the cluster uses them.
    #[arg(long, env = "MINI_REGISTRY_KEEP_FOR", value_parser = parse_ttl)]
    pub registry_keep_for: Option<Duration>,
    /// How often garbage collection (and retention) runs online; 0 = never.
    #[arg(long, env = "MINI_REGISTRY_GC_INTERVAL", default_value = "1h", value_parser = parse_ttl)]
    pub registry_gc_interval: Duration,
    /// Blobs and manifests younger than this are never collected (pushes in flight).
    #[arg(long, env = "MINI_REGISTRY_GC_GRACE", default_value = "1h", value_parser = parse_ttl)]
    pub registry_gc_grace: Duration,
    /// Interrupted uploads are resumable for this long, then deleted.
    #[arg(long, env = "MINI_REGISTRY_UPLOAD_TIMEOUT", default_value = "1h", value_parser = parse_ttl)]
    pub registry_upload_timeout: Duration,
}

/// The server's registry settings from its flags.
pub fn registry_settings(args: RegistryArgs) -> Result<mini_server::RegistrySettings, String> {
    let mut upstreams = Vec::new();
    for spec in args.registry_upstream {
        let (host, url) = match spec.split_once('=') {
            Some((host, url)) if !host.contains("://") => (host.trim().to_string(), url),
            _ => ("docker.io".to_string(), spec.as_str()),
        };
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "--registry-upstream {spec:?}: the upstream must be an http:// or https:// URL"
            ));
        }
        upstreams.push(mini_server::RegistryUpstream { host, url });
    }
    Ok(mini_server::RegistrySettings {
        upstreams,
        keep_tags: args.registry_keep_tags,
        keep_for: args.registry_keep_for,
        gc_interval: (!args.registry_gc_interval.is_zero()).then_some(args.registry_gc_interval),
        gc_grace: args.registry_gc_grace,
        upload_timeout: args.registry_upload_timeout,
    })
}

/// `mini commit POD [-c CONTAINER] REPOSITORY:TAG`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The pod whose container is snapshotted.
    pub pod: String,
    /// The new image, e.g. `default/app:patched` (a repository of the cluster's registry).
    pub image: String,
    /// The container (default: the pod's only or default container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Kubeconfig (default: $KUBECONFIG, else <data-dir>/server/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: std::path::PathBuf,
}

/// Commits the container through the API server and prints `REPOSITORY:TAG@DIGEST`.
pub fn run_commit(args: CommitArgs) -> anyhow::Result<()> {
    let path = args.kubeconfig.clone().unwrap_or_else(|| {
        mini_regclient::kubeconfig::default_kubeconfig(
            std::env::var("KUBECONFIG").ok().as_deref(),
            &args.data_dir,
        )
    });
    let registry = mini_regclient::RegistryClient::new(
        mini_regclient::kubeconfig::client_config_from_kubeconfig(&path)?,
    )?;
    let request_path = mini_regclient::commands::commit_request_path(
        &args.namespace,
        &args.pod,
        args.container.as_deref(),
        &args.image,
        registry.host(),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let status = runtime.block_on(async {
        let client = crate::kube_client(&path, "").await?;
        let req = http::Request::post(request_path).body(Vec::new())?;
        let text = client.request_text(req).await.map_err(|e| match e {
            kube::Error::Api(status) => anyhow::anyhow!("{}", status.message),
            other => anyhow::anyhow!("{other}"),
        })?;
        anyhow::Ok(text)
    })?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    println!("{}", status["message"].as_str().unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(upstreams: &[&str]) -> RegistryArgs {
        RegistryArgs {
            registry_upstream: upstreams.iter().map(|s| s.to_string()).collect(),
            registry_keep_tags: Some(3),
            registry_keep_for: None,
            registry_gc_interval: Duration::ZERO,
            registry_gc_grace: Duration::from_secs(60),
            registry_upload_timeout: Duration::from_secs(3600),
        }
    }

    #[test]
    fn registry_settings_upstream_with_and_without_host() {
        let s = registry_settings(args(&[
            "docker.io=https://harbor.example/v2/hub/",
            "http://127.0.0.1:5000",
        ]))
        .unwrap();
        assert_eq!(s.upstreams[0].host, "docker.io");
        assert_eq!(s.upstreams[0].url, "https://harbor.example/v2/hub");
        assert_eq!(s.upstreams[1].host, "docker.io");
        assert_eq!(s.upstreams[1].url, "http://127.0.0.1:5000");
        assert_eq!(s.gc_interval, None, "0 disables periodic gc");
        assert_eq!(s.keep_tags, Some(3));
    }

    #[test]
    fn registry_settings_upstream_without_scheme_is_an_error() {
        let e = registry_settings(args(&["docker.io=harbor.example"])).unwrap_err();
        assert!(e.contains("http:// or https://"), "{e}");
    }
}
