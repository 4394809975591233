//! The `mini server` flags for an external etcd datastore (`--datastore-*`) and their mapping
//! onto `mini_etcdstore::EtcdConfig`.

use std::path::PathBuf;

/// Where the server keeps its objects: sled in the data directory unless an etcd cluster is
/// given.
#[derive(Debug, Clone, clap::Args)]
pub struct DatastoreArgs {
    /// Run on an existing etcd cluster (v3 API, etcd 3.4 or later) instead of the embedded
    /// store: its client URLs, comma-separated (`https://e1:2379,https://e2:2379`).
    #[arg(
        long = "datastore-endpoint",
        env = "MINI_DATASTORE_ENDPOINT",
        value_delimiter = ','
    )]
    pub datastore_endpoint: Vec<String>,
    /// CA bundle that signed the etcd servers' certificates.
    #[arg(long, env = "MINI_DATASTORE_CAFILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd's client certificate authentication.
    #[arg(long, env = "MINI_DATASTORE_CERTFILE", requires = "datastore_keyfile")]
    pub datastore_certfile: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "MINI_DATASTORE_KEYFILE", requires = "datastore_certfile")]
    pub datastore_keyfile: Option<PathBuf>,
}

/// The etcd configuration, `None` (sled) without `--datastore-endpoint`.
pub fn etcd_config(args: DatastoreArgs) -> anyhow::Result<Option<mini_etcdstore::EtcdConfig>> {
    let endpoints: Vec<String> = args
        .datastore_endpoint
        .into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        if args.datastore_cafile.is_some() || args.datastore_certfile.is_some() {
            anyhow::bail!(
                "--datastore-cafile/--datastore-certfile need --datastore-endpoint https://HOST:2379"
            );
        }
        return Ok(None);
    }
    let mut config = mini_etcdstore::EtcdConfig::new(endpoints);
    config.ca_file = args.datastore_cafile;
    config.cert_file = args.datastore_certfile;
    config.key_file = args.datastore_keyfile;
    Ok(Some(config))
}
