//! The TLS Secrets of the served Ingresses: read one by one with GET (nodes may not list or
//! watch Secrets), kept parsed, read again periodically to pick up rotated certificates.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::sign::CertifiedKey;

use crate::routes::TlsRef;
use crate::tls;

/// How long one Secret GET may take.
const GET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One Secret as last read: its certificate, or why there is none.
#[derive(Debug, Clone)]
enum Entry {
    Key {
        key: Arc<CertifiedKey>,
        /// The Secret's resourceVersion (unchanged: the parsed key is kept).
        version: Option<String>,
    },
    Missing(String),
}

/// Parsed certificates by `(namespace, secret name)`.
#[derive(Debug, Default)]
pub struct CertCache {
    entries: HashMap<(String, String), Entry>,
}

impl CertCache {
    /// Reads the Secrets in `wanted` not read yet (all of them when `all`), and forgets those no
    /// longer wanted. Failures are logged when they change and leave the default certificate.
    pub async fn fetch(
        &mut self,
        client: &kube::Client,
        wanted: &BTreeSet<(String, String)>,
        all: bool,
    ) {
        self.entries.retain(|k, _| wanted.contains(k));
        for key in wanted {
            if !all && self.entries.contains_key(key) {
                continue;
            }
            let (ns, name) = key;
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            // bounded, so an unreachable API server never holds up route updates for long
            let entry = match tokio::time::timeout(GET_TIMEOUT, api.get(name)).await {
                Ok(Ok(secret)) => self.parse(key, &secret),
                // a failed read keeps serving what was read before
                Ok(Err(e)) => self.previous_or(key, format!("reading the secret: {e}")),
                Err(_) => self.previous_or(key, "reading the secret timed out".into()),
            };
            self.insert(key.clone(), entry);
        }
    }

    fn previous_or(&self, key: &(String, String), reason: String) -> Entry {
        match self.entries.get(key) {
            Some(previous @ Entry::Key { .. }) => previous.clone(),
            _ => Entry::Missing(reason),
        }
    }

    /// Sets what was read for `key`, logging a change of failure.
    fn insert(&mut self, key: (String, String), entry: Entry) {
        if let Entry::Missing(reason) = &entry {
            let same = matches!(self.entries.get(&key), Some(Entry::Missing(r)) if r == reason);
            if !same {
                tracing::warn!(secret = format!("{}/{}", key.0, key.1), %reason, "ingress TLS secret unusable; serving the default certificate for its hosts");
            }
        }
        self.entries.insert(key, entry);
    }

    fn parse(&self, key: &(String, String), secret: &Secret) -> Entry {
        let version = secret.metadata.resource_version.clone();
        if let Some(Entry::Key { key: k, version: v }) = self.entries.get(key) {
            if v.is_some() && *v == version {
                return Entry::Key {
                    key: k.clone(),
                    version,
                };
            }
        }
        parse_secret(secret)
    }

    /// The certificate for each TLS host of `refs` (the first entry naming a host wins).
    pub fn host_map(&self, refs: &[TlsRef]) -> HashMap<String, Arc<CertifiedKey>> {
        let mut out = HashMap::new();
        for r in refs {
            let Some(Entry::Key { key, .. }) =
                self.entries.get(&(r.namespace.clone(), r.secret.clone()))
            else {
                continue;
            };
            for host in &r.hosts {
                out.entry(host.clone()).or_insert_with(|| key.clone());
            }
        }
        out
    }
}

fn parse_secret(secret: &Secret) -> Entry {
    let version = secret.metadata.resource_version.clone();
    let data = secret.data.clone().unwrap_or_default();
    let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
        return Entry::Missing("it has no tls.crt and tls.key".into());
    };
    match tls::certified_key_from_pem(&cert.0, &key.0) {
        Ok(k) => Entry::Key {
            key: Arc::new(k),
            version,
        },
        Err(e) => Entry::Missing(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(cert: &[u8], key: &[u8]) -> Secret {
        let mut s = Secret::default();
        s.metadata.resource_version = Some("1".into());
        s.data = Some(
            [
                ("tls.crt".to_string(), ByteString(cert.to_vec())),
                ("tls.key".to_string(), ByteString(key.to_vec())),
            ]
            .into(),
        );
        s
    }

    #[test]
    fn host_map_uses_parsed_secrets_and_skips_broken_ones() {
        let generated = rcgen::generate_simple_self_signed(vec!["a.test".into()]).expect("cert");
        let good = secret(
            generated.cert.pem().as_bytes(),
            generated.signing_key.serialize_pem().as_bytes(),
        );
        let mut cache = CertCache::default();
        let k_good = ("ns".to_string(), "good".to_string());
        let k_bad = ("ns".to_string(), "bad".to_string());
        let e = cache.parse(&k_good, &good);
        cache.insert(k_good, e);
        let e = cache.parse(&k_bad, &secret(b"x", b"y"));
        cache.insert(k_bad, e);
        let refs = vec![
            TlsRef {
                namespace: "ns".into(),
                secret: "bad".into(),
                hosts: vec!["b.test".into()],
            },
            TlsRef {
                namespace: "ns".into(),
                secret: "good".into(),
                hosts: vec!["a.test".into(), "b.test".into()],
            },
        ];
        let map = cache.host_map(&refs);
        assert_eq!(map.len(), 2);
        assert!(map.contains_key("a.test"));
        assert!(map.contains_key("b.test"));
    }
}
