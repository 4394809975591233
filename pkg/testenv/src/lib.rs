//! An in-process mini API server for tests: a temporary sled store and kube clients that reach
//! the server through its tower service, with no TCP or TLS.

use std::sync::Arc;

use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_rbac::UserInfo;

/// A running in-process API server; dropping it removes its store.
pub struct TestEnv {
    pub server: ApiServer,
    _dir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh server over an empty store (with the bootstrap namespaces and RBAC).
    pub async fn start() -> TestEnv {
        let dir = tempfile::tempdir().expect("creating a temp dir for the store");
        let store = mini_store::SledStore::open(dir.path()).expect("opening the test store");
        let server = ApiServer::new(Arc::new(store), ApiServerConfig::for_tests())
            .await
            .expect("starting the in-process api server");
        TestEnv { server, _dir: dir }
    }

    /// A client acting as the cluster admin (`system:masters`).
    pub fn admin_client(&self) -> kube::Client {
        kube::Client::new(
            self.server.local_service(ApiServer::admin_user()),
            "default",
        )
    }

    /// A client acting as the in-process controllers do (`system:kube-controller-manager`).
    pub fn controllers_client(&self) -> kube::Client {
        kube::Client::new(
            self.server.local_service(ApiServer::controllers_user()),
            "default",
        )
    }

    /// A client acting as the in-process scheduler does (`system:kube-scheduler`).
    pub fn scheduler_client(&self) -> kube::Client {
        kube::Client::new(
            self.server.local_service(ApiServer::scheduler_user()),
            "default",
        )
    }

    /// A client acting as `user` in `groups` (plus `system:authenticated`), subject to RBAC.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".to_string());
        let info = UserInfo {
            name: user.to_string(),
            groups,
        };
        kube::Client::new(self.server.local_service(info), "default")
    }
}
