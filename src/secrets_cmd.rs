//! `mini secrets-encrypt` (status, rotate-keys, reencrypt): clap types and dispatch to
//! `mini_encryption::client`, which talks to the running server.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use mini_encryption::client;

#[derive(Debug, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Whether encryption is on, the write key, every key with how many stored values use
    /// it, and the re-encryption pass.
    Status(SecretsStatusArgs),
    /// Make a new key the write key (old keys stay readable), re-encrypt every stored value
    /// with it, then retire the keys no stored value uses.
    RotateKeys(SecretsPassArgs),
    /// Re-encrypt every stored value with the write key (resuming an interrupted pass), then
    /// retire the keys no stored value uses.
    Reencrypt(SecretsPassArgs),
}

#[derive(Debug, clap::Args)]
pub struct SecretsClientArgs {
    /// Admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SecretsStatusArgs {
    /// Print the server's answer as JSON.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub client: SecretsClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct SecretsPassArgs {
    /// Return once the pass started instead of waiting for it to end.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: SecretsClientArgs,
}

async fn kube(args: &SecretsClientArgs) -> anyhow::Result<kube::Client> {
    crate::admin_client(args.kubeconfig.as_deref(), &args.data_dir).await
}

async fn pass(args: SecretsPassArgs, rotate: bool) -> anyhow::Result<()> {
    let kube = kube(&args.client).await?;
    let started = if rotate {
        client::rotate_keys(&kube).await?
    } else {
        client::reencrypt(&kube).await?
    };
    println!(
        "{}write key {}; re-encryption pass {} started",
        if rotate { "rotated: " } else { "" },
        started.write_keys.join(", "),
        started.run
    );
    if args.no_wait {
        return Ok(());
    }
    let outcome = client::wait(&kube, started.run, Duration::from_millis(500)).await?;
    println!("{}", client::render_outcome(&outcome));
    Ok(())
}

/// Runs a `mini secrets-encrypt` command.
pub fn run_secrets_encrypt(cmd: SecretsEncryptCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cmd {
            SecretsEncryptCommand::Status(args) => {
                let kube = kube(&args.client).await?;
                let status = client::status(&kube).await?;
                if args.output == "json" {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", client::render(&status));
                }
                Ok(())
            }
            SecretsEncryptCommand::RotateKeys(args) => pass(args, true).await,
            SecretsEncryptCommand::Reencrypt(args) => pass(args, false).await,
        }
    })
}
