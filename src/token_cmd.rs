//! `mini token` (bootstrap join tokens) and `mini bundle` (air-gap bundles): clap types and
//! dispatch to `mini_controllers::bootstrap_tokens` and `mini_bundle`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an expiring bootstrap token and print it in the CA-pinned form agents join with.
    Create(TokenCreateArgs),
    /// List bootstrap tokens (id, time left, expiry, usages, description, groups).
    List(TokenClientArgs),
    /// Delete a bootstrap token: agents can no longer join with it.
    Delete(TokenDeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenClientArgs {
    /// Admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid, e.g. 24h, 90m, 7d, 1h30m; 0 = never expires.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// What the token is for (shown by `mini token list`).
    #[arg(long, default_value = "")]
    pub description: String,
    /// Extra groups the token authenticates into (each system:bootstrappers:...).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub client: TokenClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct TokenDeleteArgs {
    /// The token's id (or the whole token).
    pub id: String,
    #[command(flatten)]
    pub client: TokenClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write an air-gap bundle: this binary, images as one OCI layout, optionally the
    /// containerd and runc packages.
    Create(BundleCreateArgs),
    /// Check a bundle: the header's hash against the binary, every file against the manifest.
    Verify(BundleVerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct BundleCreateArgs {
    /// Image tarballs (OCI layout or docker-archive, plain/gzip/zstd), or directories of them
    /// (repeatable).
    #[arg(long)]
    pub images: Vec<PathBuf>,
    /// Include the containerd and runc .deb packages of this machine's distribution (and their
    /// dependencies a minimal install lacks), fetched with apt-get download.
    #[arg(long)]
    pub packages: bool,
    /// The mini binary to bundle (default: the running one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The bundle to write.
    #[arg(short = 'o', long, default_value = "mini-bundle.tar.zst")]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BundleVerifyArgs {
    /// The bundle.
    pub file: PathBuf,
}

/// Parses `24h`, `90m`, `45s`, `7d`, `1h30m` or `0`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use s, m, h or d)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{s:?}: expected a number before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || s.is_empty() {
        return Err(format!("{s:?}: expected a duration like 24h, 90m or 0"));
    }
    Ok(Duration::from_secs(total))
}

async fn client(args: &TokenClientArgs) -> anyhow::Result<kube::Client> {
    crate::admin_client(args.kubeconfig.as_deref(), &args.data_dir).await
}

/// Runs a `mini token` command.
pub fn run_token(cmd: TokenCommand) -> anyhow::Result<()> {
    use mini_controllers::bootstrap_tokens as tokens;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cmd {
            TokenCommand::Create(args) => {
                let client = client(&args.client).await?;
                // the exact bytes agents hash: the CA bundle the server serves
                let ca = client
                    .request_text(http::Request::get("/cacerts").body(Vec::new())?)
                    .await
                    .map_err(|e| anyhow::anyhow!("fetching /cacerts from the server: {e}"))?;
                let request = tokens::TokenRequest {
                    ttl: (!args.ttl.is_zero()).then_some(args.ttl),
                    description: args.description,
                    groups: args.groups,
                };
                let (token, _) = tokens::create_token(&client, &request).await?;
                println!("{}", token.format(&ca));
            }
            TokenCommand::List(args) => {
                let client = client(&args).await?;
                let now = mini_certs::unix_time::now();
                let list = tokens::list_tokens(&client).await?;
                println!(
                    "{:<8} {:<10} {:<22} {:<30} {:<24} EXTRA GROUPS",
                    "ID", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
                );
                for t in list {
                    println!(
                        "{:<8} {:<10} {:<22} {:<30} {:<24} {}",
                        t.id,
                        t.ttl_at(now),
                        t.expiration.as_deref().unwrap_or("<never>"),
                        t.usages.join(","),
                        if t.description.is_empty() {
                            "<none>"
                        } else {
                            &t.description
                        },
                        if t.groups.is_empty() {
                            "<none>".to_string()
                        } else {
                            t.groups.join(",")
                        }
                    );
                }
            }
            TokenCommand::Delete(args) => {
                let client = client(&args.client).await?;
                let id = tokens::delete_token(&client, &args.id).await?;
                println!("bootstrap token {id} deleted");
            }
        }
        Ok(())
    })
}

/// Runs a `mini bundle` command.
pub fn run_bundle(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Create(args) => {
            let binary = match args.binary {
                Some(b) => b,
                None => std::env::current_exe().map_err(|e| {
                    anyhow::anyhow!("finding the running binary: {e}; pass --binary")
                })?,
            };
            let debs_dir = tempfile::tempdir()?;
            let packages = if args.packages {
                mini_bundle::create::runtime_packages(&mini_bundle::DebianHost, debs_dir.path())?
            } else {
                Vec::new()
            };
            let manifest = mini_bundle::create(
                &mini_bundle::CreateOptions {
                    binary,
                    images: args.images,
                    packages,
                    mini_version: env!("CARGO_PKG_VERSION").to_string(),
                    level: 0,
                },
                &args.output,
            )?;
            println!(
                "wrote {} ({} files)",
                args.output.display(),
                manifest.files.len()
            );
        }
        BundleCommand::Verify(args) => {
            let s = mini_bundle::verify(&args.file)?;
            println!(
                "{}: ok (mini {}, binary sha256 {}, {} files, {} packages)",
                args.file.display(),
                s.manifest.mini_version,
                s.binary_sha256,
                s.files,
                s.packages.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ttl_accepts_units_combinations_and_zero() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "5x", "h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
