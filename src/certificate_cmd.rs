//! `mini certificate` (check, rotate, rotate-ca): clap types and dispatch to `mini_check`
//! (the certificates found under the data dir) and `mini_certrotate::client` (the running
//! server's endpoints).

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Every certificate under the data dir (server and agent), one per line: path, subject,
    /// issuer, expiry and when it is renewed.
    Check(CertCheckArgs),
    /// Renew every leaf certificate now on the running server; agents renew theirs when they
    /// next ask the server (within a twentieth of their certificates' life, at most a minute).
    Rotate(CertClientArgs),
    /// Make a new CA the signer: the old CA stays trusted for --overlap (bundles hold both,
    /// every leaf is re-issued by the new CA), then it is retired. Join tokens pin the CA
    /// bundle: use the token in <data-dir>/server/node-token after the overlap.
    RotateCa(CertRotateCaArgs),
}

#[derive(Debug, clap::Args)]
pub struct CertCheckArgs {
    /// The data dir whose server/tls and agent/tls are listed.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Print JSON instead of one line per certificate.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Debug, clap::Args)]
pub struct CertClientArgs {
    /// Admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CertRotateCaArgs {
    /// How long the old CA stays trusted (e.g. 30m, 12h, 7d).
    #[arg(long, default_value = "24h", value_parser = mini_certs::parse_lifetime)]
    pub overlap: std::time::Duration,
    #[command(flatten)]
    pub client: CertClientArgs,
}

/// Runs a `mini certificate` command.
pub fn run_certificate(cmd: CertificateCommand) -> anyhow::Result<()> {
    match cmd {
        CertificateCommand::Check(args) => {
            let certs = mini_check::status::certificates(
                &mini_check::LinuxCheckHost,
                &args.data_dir,
                mini_certs::now_unix(),
            );
            if certs.is_empty() {
                anyhow::bail!(
                    "no certificate under {}/server/tls or {}/agent/tls; pass --data-dir",
                    args.data_dir.display(),
                    args.data_dir.display()
                );
            }
            if args.output == "json" {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                for cert in &certs {
                    println!("{}", cert.line());
                }
            }
            Ok(())
        }
        CertificateCommand::Rotate(args) => call(args, None),
        CertificateCommand::RotateCa(args) => call(args.client, Some(args.overlap)),
    }
}

fn call(args: CertClientArgs, ca_overlap: Option<std::time::Duration>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let kube = crate::admin_client(args.kubeconfig.as_deref(), &args.data_dir).await?;
        let status = match ca_overlap {
            None => mini_certrotate::client::rotate(&kube).await?,
            Some(overlap) => mini_certrotate::client::rotate_ca(&kube, overlap).await?,
        };
        print!("{}", mini_certrotate::client::render(&status));
        Ok(())
    })
}
