//! `mini snapshot` (save, ls, delete, prune, restore) and the server's snapshot flags: clap
//! types and dispatch to `mini_snapshot`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::datastore_cmd::{self, DatastoreArgs};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Ask the running server to save a snapshot of the datastore (one consistent revision
    /// and the encryption keyring) into its snapshot directory.
    Save(SaveArgs),
    /// List the snapshots in the snapshot directory.
    #[command(alias = "list")]
    Ls(DirArgs),
    /// Delete snapshots by file name (as listed).
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Delete the oldest snapshots of a name until N remain.
    Prune(PruneArgs),
    /// Bring a stopped cluster back to a snapshot: the datastore and the encryption keyring.
    /// Refused while the server runs, and before anything changes when the file is corrupt or
    /// not a mini snapshot.
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DirArgs {
    /// The server's data dir.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Snapshot directory (default: <data-dir>/server/db/snapshots).
    #[arg(long, env = "MINI_SNAPSHOT_DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

impl DirArgs {
    fn dir(&self) -> PathBuf {
        self.snapshot_dir
            .clone()
            .unwrap_or_else(|| mini_snapshot::default_dir(&self.data_dir))
    }
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Name of the snapshot (the file is <name>-<UTC time>.snap); default on-demand.
    #[arg(long)]
    pub name: Option<String>,
    /// Admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Snapshot file names.
    #[arg(required = true)]
    pub files: Vec<String>,
    #[command(flatten)]
    pub dir: DirArgs,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Snapshots of the name to keep.
    #[arg(long)]
    pub keep: usize,
    /// Which snapshots: those saved under this name (scheduled ones are named scheduled).
    #[arg(long, default_value = mini_snapshot::ON_DEMAND)]
    pub name: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The snapshot: a path, or a file name in the snapshot directory.
    pub file: String,
    #[command(flatten)]
    pub dir: DirArgs,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
}

/// The server's snapshot flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotServerArgs {
    /// When to save a `scheduled` snapshot: a cron expression in UTC (minute hour
    /// day-of-month month day-of-week; an optional leading seconds field).
    #[arg(long, env = "MINI_SNAPSHOT_CRON", default_value = mini_snapshot::DEFAULT_CRON)]
    pub snapshot_cron: String,
    /// Scheduled snapshots to keep.
    #[arg(long, env = "MINI_SNAPSHOT_RETENTION", default_value_t = mini_snapshot::DEFAULT_KEEP)]
    pub snapshot_retention: usize,
    /// Snapshot directory (default: <data-dir>/server/db/snapshots).
    #[arg(long, env = "MINI_SNAPSHOT_DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Take no scheduled snapshots.
    #[arg(long, env = "MINI_DISABLE_SNAPSHOTS")]
    pub disable_snapshots: bool,
    /// How often the datastore gives disk space back: sled rewrites itself once its file
    /// exceeds twice the live data; etcd is compacted behind the watch history and
    /// defragmented (e.g. 5m, 30s; 0 turns it off).
    #[arg(long, env = "MINI_DATASTORE_COMPACT_INTERVAL", default_value = "5m", value_parser = crate::token_cmd::parse_ttl)]
    pub datastore_compact_interval: std::time::Duration,
}

/// The server's snapshot settings from its flags.
pub fn snapshot_settings(
    args: &SnapshotServerArgs,
) -> anyhow::Result<mini_server::SnapshotSettings> {
    let schedule = if args.disable_snapshots {
        None
    } else {
        Some(mini_snapshot::parse_cron(
            &args.snapshot_cron,
            args.snapshot_retention,
        )?)
    };
    Ok(mini_server::SnapshotSettings {
        dir: args.snapshot_dir.clone(),
        schedule,
    })
}

fn print_entries(entries: &[mini_snapshot::Entry], output: &str) -> anyhow::Result<()> {
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    println!(
        "{:<44} {:>10} {:>8} {:>12} {:<6} CREATED",
        "NAME", "SIZE", "KEYS", "REVISION", "STORE"
    );
    for entry in entries {
        println!(
            "{:<44} {:>10} {:>8} {:>12} {:<6} {}",
            entry.file,
            entry.size,
            entry.header.keys,
            entry.header.revision,
            entry.header.backend,
            entry.header.created
        );
    }
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let path = mini_snapshot::resolve(&args.dir.dir(), &args.file)?;
    let etcd = datastore_cmd::etcd_config(args.datastore)?;
    let server_dir = args.dir.data_dir.join("server");
    let (snapshot, restored) = mini_snapshot::restore_file(&server_dir, &path, etcd).await?;
    println!(
        "restored {} keys of {} (revision {}, {}) from {}{}; revisions continue at {} (above {} issued before), older ones answer 410",
        restored.keys,
        snapshot.header.name,
        snapshot.header.revision,
        snapshot.header.created,
        path.display(),
        if restored.keyring { " with its encryption keyring" } else { "" },
        restored.revision,
        restored.previous,
    );
    Ok(())
}

/// Runs a `mini snapshot` command.
pub fn run_snapshot(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Ls(args) => {
            print_entries(&mini_snapshot::list(&args.dir())?, &args.output)
        }
        SnapshotCommand::Delete(args) => {
            let dir = args.dir.dir();
            for file in &args.files {
                let path = mini_snapshot::delete(&dir, file)?;
                println!("deleted {}", path.display());
            }
            Ok(())
        }
        SnapshotCommand::Prune(args) => {
            let removed = mini_snapshot::prune(&args.dir.dir(), &args.name, args.keep)?;
            for entry in &removed {
                println!("deleted {}", entry.path.display());
            }
            println!(
                "{} deleted, {} {} kept at most",
                removed.len(),
                args.keep,
                args.name
            );
            Ok(())
        }
        SnapshotCommand::Save(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async move {
                let kube = crate::admin_client(args.kubeconfig.as_deref(), &args.data_dir).await?;
                let entry = mini_snapshot::save_via_server(&kube, args.name.as_deref()).await?;
                println!(
                    "saved {} ({} keys at revision {}, {} bytes)",
                    entry.path.display(),
                    entry.header.keys,
                    entry.header.revision,
                    entry.size
                );
                Ok(())
            })
        }
        SnapshotCommand::Restore(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(restore(args))
        }
    }
}
