//! The gRPC connection to etcd: one balanced channel over every endpoint, TLS from the
//! configured files, and the calls the store makes (each marked "require a leader", so a member
//! without one answers at once instead of waiting).

use std::path::PathBuf;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, RangeRequest, RangeResponse, StatusRequest, TxnRequest,
    TxnResponse, WatchRequest, WatchResponse,
};
use crate::{EtcdConfig, EtcdError};

/// Large listings and watch batches exceed gRPC's default 4 MiB message limit.
const MAX_MESSAGE: usize = 256 << 20;

/// A connection to the cluster; cheap to clone.
#[derive(Clone)]
pub(crate) struct Etcd {
    channel: Channel,
}

/// The TLS settings for HTTPS endpoints, from the configured files.
pub(crate) fn tls_config(config: &EtcdConfig) -> Result<Option<ClientTlsConfig>, EtcdError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| EtcdError::ReadFile {
            path: path.clone(),
            source,
        })
    };
    let identity = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => Some(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => None,
        _ => return Err(EtcdError::PartialIdentity),
    };
    let https = config.endpoints.iter().any(|e| e.starts_with("https://"));
    if !https {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &config.ca_file {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_native_roots(),
    };
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(Some(tls))
}

/// The transport settings of one endpoint.
pub(crate) fn endpoint(
    url: &str,
    tls: Option<&ClientTlsConfig>,
    timeout: Duration,
) -> Result<Endpoint, EtcdError> {
    let client_error = |message: String| EtcdError::Client {
        endpoints: url.to_string(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| client_error(crate::describe(&e)))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let tls = tls.cloned().unwrap_or_else(ClientTlsConfig::new);
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| client_error(crate::describe(&e)))?;
    }
    Ok(endpoint)
}

/// A request marked so etcd refuses it at once when the member has no leader.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    request
}

impl Etcd {
    /// A lazily connecting channel balanced over `config.endpoints`.
    pub(crate) fn new(config: &EtcdConfig) -> Result<Etcd, EtcdError> {
        let tls = tls_config(config)?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| endpoint(url, tls.as_ref(), config.request_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Etcd {
            channel: Channel::balance_list(endpoints.into_iter()),
        })
    }

    /// One lazily connecting channel per endpoint, in `config.endpoints`' order (for reads of
    /// one member's own copy while etcd has no quorum).
    pub(crate) fn per_member(config: &EtcdConfig) -> Result<Vec<Etcd>, EtcdError> {
        let tls = tls_config(config)?;
        config
            .endpoints
            .iter()
            .map(|url| {
                Ok(Etcd {
                    channel: endpoint(url, tls.as_ref(), config.request_timeout)?.connect_lazy(),
                })
            })
            .collect()
    }

    /// A serializable range read answered from the copy of the member this channel reaches,
    /// without asking for a leader (a member without a quorum still serves its own copy).
    pub(crate) async fn range_local(
        &self,
        message: RangeRequest,
    ) -> Result<RangeResponse, tonic::Status> {
        let message = RangeRequest {
            serializable: true,
            ..message
        };
        Ok(self
            .kv()
            .range(tonic::Request::new(message))
            .await?
            .into_inner())
    }

    /// The member id of the leader the member this channel reaches knows of; 0 when it knows
    /// none (no quorum: etcd's leaders step down when they lose contact with a majority).
    pub(crate) async fn leader(&self) -> Result<u64, tonic::Status> {
        Ok(MaintenanceClient::new(self.channel.clone())
            .status(tonic::Request::new(StatusRequest {}))
            .await?
            .into_inner()
            .leader)
    }

    /// A connection over an already connected channel (one endpoint, for probing).
    pub(crate) fn from_channel(channel: Channel) -> Etcd {
        Etcd { channel }
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) async fn range(
        &self,
        message: RangeRequest,
    ) -> Result<RangeResponse, tonic::Status> {
        Ok(self.kv().range(request(message)).await?.into_inner())
    }

    pub(crate) async fn txn(&self, message: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        Ok(self.kv().txn(request(message)).await?.into_inner())
    }

    pub(crate) async fn compact(
        &self,
        message: CompactionRequest,
    ) -> Result<CompactionResponse, tonic::Status> {
        Ok(self.kv().compact(request(message)).await?.into_inner())
    }

    /// Opens a watch stream and sends `create` on it; the sender keeps the stream open.
    pub(crate) async fn watch(
        &self,
        create: WatchRequest,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<WatchRequest>,
            tonic::Streaming<WatchResponse>,
        ),
        tonic::Status,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create)
            .await
            .map_err(|_| tonic::Status::internal("the watch request channel closed"))?;
        let mut client = WatchClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let stream = client
            .watch(request(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok((tx, stream))
    }
}
