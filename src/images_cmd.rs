//! `mini images ls | push | rm | import`: clap types and dispatch to `mini_regclient::commands`
//! (the cluster's registry at `https://<server>/v2/`, reached with a kubeconfig), and
//! `import --local` to `mini_agent` (this node's containerd).

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List the images in the cluster's registry: REPOSITORY TAG DIGEST SIZE.
    Ls(ImagesLsArgs),
    /// Push image tarballs (OCI layout or docker-archive, plain/gzip/zstd) to the cluster's
    /// registry under their names (`<server>/NS/app:tag` → `NS/app`; other hosts are mirrored).
    Push(ImagesPushArgs),
    /// Delete tags (REPOSITORY:TAG) or manifests (REPOSITORY@sha256:...) from the registry.
    Rm(ImagesRmArgs),
    /// Import image tarballs (air-gap bundles) into the cluster's registry, like push; with
    /// --local into this node's containerd instead.
    Import(ImagesImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Kubeconfig whose server, CA and user reach the registry (default: $KUBECONFIG, else
    /// <data-dir>/server/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig (and the agent's, with --local).
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ImagesLsArgs {
    /// Only this repository, e.g. default/app or docker.io/library/busybox.
    pub repository: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImagesPushArgs {
    /// The tarballs.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImagesRmArgs {
    /// REPOSITORY:TAG or REPOSITORY@sha256:... as `mini images ls` shows them.
    #[arg(required = true)]
    pub references: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImagesImportArgs {
    /// The tarballs.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Import into this node's containerd (pinned, no registry) instead of the cluster's registry.
    #[arg(long)]
    pub local: bool,
    /// containerd's socket for --local (default: the agent's managed containerd under --data-dir).
    #[arg(long, env = "MINI_CONTAINERD_SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn client(args: &RegistryArgs) -> anyhow::Result<mini_regclient::RegistryClient> {
    let path = args.kubeconfig.clone().unwrap_or_else(|| {
        mini_regclient::kubeconfig::default_kubeconfig(
            std::env::var("KUBECONFIG").ok().as_deref(),
            &args.data_dir,
        )
    });
    let config = mini_regclient::kubeconfig::client_config_from_kubeconfig(&path)?;
    Ok(mini_regclient::RegistryClient::new(config)?)
}

fn push(files: &[PathBuf], registry: &RegistryArgs) -> anyhow::Result<()> {
    let client = client(registry)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let pushed = runtime.block_on(mini_regclient::commands::push_files(&client, files))?;
    for image in pushed {
        println!(
            "pushed {} ({})",
            image.reference(client.host()),
            image.digest
        );
    }
    Ok(())
}

/// Runs a `mini images` command.
pub fn run_images(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Ls(args) => {
            let client = client(&args.registry)?;
            let repository = args
                .repository
                .as_deref()
                .map(|r| mini_regclient::commands::ls_repository(r, client.host()))
                .transpose()?;
            let runtime = tokio::runtime::Runtime::new()?;
            let rows = runtime.block_on(mini_regclient::commands::list_images(
                &client,
                repository.as_deref(),
            ))?;
            print!("{}", mini_regclient::commands::format_table(&rows));
            Ok(())
        }
        ImagesCommand::Push(args) => push(&args.files, &args.registry),
        ImagesCommand::Rm(args) => {
            let client = client(&args.registry)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let deleted =
                runtime.block_on(mini_regclient::commands::remove(&client, &args.references))?;
            for d in deleted {
                println!("deleted {d}");
            }
            Ok(())
        }
        ImagesCommand::Import(args) if args.local || args.containerd_socket.is_some() => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async move {
                for file in &args.files {
                    let names = mini_agent::import_image_file(
                        file,
                        args.containerd_socket.clone(),
                        &args.registry.data_dir,
                    )
                    .await?;
                    for name in names {
                        println!("imported {name}");
                    }
                }
                Ok(())
            })
        }
        ImagesCommand::Import(args) => push(&args.files, &args.registry),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn images(args: &[&str]) -> ImagesCommand {
        let argv = ["mini", "images"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Images(cmd) => cmd,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn images_rm_several_references_keeps_order() {
        match images(&["rm", "default/app:v1", "x/y@sha256:00"]) {
            ImagesCommand::Rm(a) => assert_eq!(a.references, ["default/app:v1", "x/y@sha256:00"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn images_import_local_with_data_dir_goes_to_containerd() {
        match images(&["import", "a.tar", "b.tar", "--local", "--data-dir", "/d"]) {
            ImagesCommand::Import(a) => {
                assert!(a.local);
                assert_eq!(a.files.len(), 2);
                assert_eq!(a.registry.data_dir, PathBuf::from("/d"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn images_ls_repository_and_kubeconfig_are_parsed() {
        match images(&["ls", "default/app", "--kubeconfig", "/k"]) {
            ImagesCommand::Ls(a) => {
                assert_eq!(a.repository.as_deref(), Some("default/app"));
                assert_eq!(a.registry.kubeconfig, Some(PathBuf::from("/k")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn images_push_without_files_is_usage_error() {
        assert!(Cli::try_parse_from(["mini", "images", "push"]).is_err());
    }
}
