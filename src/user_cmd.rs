//! `mini user` (people's accounts: add, passwd, rm, ls) and the server's session flags: clap
//! types and dispatch to `mini_accounts::client`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account: a Kubernetes user bound to the admin, edit or view ClusterRole,
    /// cluster-wide or in the given namespaces.
    Add(UserAddArgs),
    /// Set an account's password; ends its sessions and revokes its kubeconfig tokens.
    Passwd(UserPasswdArgs),
    /// Remove an account, its role bindings, sessions and tokens.
    Rm(UserNameArgs),
    /// List accounts with their roles.
    Ls(UserClientArgs),
}

#[derive(Debug, clap::Args)]
pub struct UserClientArgs {
    /// Admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UserAddArgs {
    /// The account (and Kubernetes user) name.
    pub name: String,
    /// The ClusterRole the account is bound to.
    #[arg(long, default_value = "view", value_parser = ["cluster-admin", "admin", "edit", "view"])]
    pub role: String,
    /// A namespace the role applies in (repeatable); none: cluster-wide.
    #[arg(long = "namespace", short = 'n', value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub client: UserClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct UserPasswdArgs {
    /// The account.
    pub name: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub client: UserClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct UserNameArgs {
    /// The account.
    pub name: String,
    #[command(flatten)]
    pub client: UserClientArgs,
}

/// `mini server` flags for login sessions.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    /// Console sessions unused this long expire, e.g. 30m, 2h.
    #[arg(long, env = "MINI_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = crate::token_cmd::parse_ttl)]
    pub session_idle_timeout: Duration,
    /// Console sessions expire this long after login however busy, e.g. 12h.
    #[arg(long, env = "MINI_SESSION_LIFETIME", default_value = "12h", value_parser = crate::token_cmd::parse_ttl)]
    pub session_lifetime: Duration,
}

/// The session limits of `args`; zero durations are refused.
pub fn session_limits(args: &SessionArgs) -> anyhow::Result<mini_accounts::SessionLimits> {
    if args.session_idle_timeout.is_zero() || args.session_lifetime.is_zero() {
        anyhow::bail!("--session-idle-timeout and --session-lifetime must be longer than 0");
    }
    Ok(mini_accounts::SessionLimits {
        idle: args.session_idle_timeout.as_secs() as i64,
        lifetime: args.session_lifetime.as_secs() as i64,
    })
}

async fn client(args: &UserClientArgs) -> anyhow::Result<kube::Client> {
    crate::admin_client(args.kubeconfig.as_deref(), &args.data_dir).await
}

/// Runs a `mini user` command.
pub fn run_user(cmd: UserCommand) -> anyhow::Result<()> {
    use mini_accounts::client as accounts;
    // the password is read before the runtime starts: a prompt needs the terminal alone
    let password = match &cmd {
        UserCommand::Add(a) => Some(accounts::read_password(a.password_stdin)?),
        UserCommand::Passwd(a) => Some(accounts::read_password(a.password_stdin)?),
        _ => None,
    }
    .unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cmd {
            UserCommand::Add(args) => {
                let client = client(&args.client).await?;
                let req = mini_accounts::manage::AddRequest {
                    name: args.name,
                    password,
                    role: Some(args.role),
                    namespaces: args.namespaces,
                };
                let info = accounts::add(&client, &req).await?;
                println!(
                    "account {} created ({})",
                    info.name,
                    accounts::roles_text(&info)
                );
            }
            UserCommand::Passwd(args) => {
                let client = client(&args.client).await?;
                accounts::passwd(&client, &args.name, &password).await?;
                println!(
                    "password of {} changed; its sessions and tokens ended",
                    args.name
                );
            }
            UserCommand::Rm(args) => {
                let client = client(&args.client).await?;
                accounts::remove(&client, &args.name).await?;
                println!("account {} removed", args.name);
            }
            UserCommand::Ls(args) => {
                let client = client(&args).await?;
                let list = accounts::list(&client).await?;
                println!(
                    "{:<24} {:<40} {:<20} CREATED",
                    "NAME", "ROLES", "CREATED BY"
                );
                for info in list {
                    println!(
                        "{:<24} {:<40} {:<20} {}",
                        info.name,
                        accounts::roles_text(&info),
                        info.created_by,
                        info.created
                    );
                }
            }
        }
        Ok(())
    })
}
