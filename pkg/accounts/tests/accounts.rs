//! Integration tests of accounts over an in-process API server: roles as RBAC bindings made
//! as the caller (escalation refused), sessions (login, CSRF, expiry, rate limit, surviving a
//! new accounts service over the same store), account tokens and the audit log.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use mini_accounts::api::Accounts;
use mini_accounts::manage::{AddRequest, PasswordRequest};
use mini_accounts::{account_user, AccountsConfig, AccountsError, SessionLimits};
use mini_apiserver::{AccountAuthenticator, ApiServer, Body};
use mini_rbac::UserInfo;
use mini_testenv::TestEnv;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const HOST: &str = "127.0.0.1:6443";
const ORIGIN: &str = "https://127.0.0.1:6443";

struct Fixture {
    env: TestEnv,
    dir: tempfile::TempDir,
    accounts: Arc<Accounts>,
}

fn config(dir: &std::path::Path, limits: SessionLimits) -> AccountsConfig {
    let mut c = AccountsConfig::new(dir, "ca".into());
    c.sessions = limits;
    c
}

async fn fixture_with(limits: SessionLimits) -> Fixture {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = mini_accounts::install(
        &env.server,
        config(dir.path(), limits),
        CancellationToken::new(),
    );
    for ns in ["a", "b"] {
        raw(
            &env.admin_client(),
            Method::POST,
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        )
        .await
        .unwrap();
    }
    Fixture { env, dir, accounts }
}

async fn fixture() -> Fixture {
    fixture_with(SessionLimits::default()).await
}

fn add(name: &str, role: &str, namespaces: &[&str]) -> AddRequest {
    AddRequest {
        name: name.into(),
        password: format!("{name}-password"),
        role: Some(role.into()),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
    }
}

/// A request through `client`; `Err(code)` on a refusal.
async fn raw(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, u16> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) => Err(s.code),
        Err(e) => panic!("request {path}: {e}"),
    }
}

fn account_client(env: &TestEnv, name: &str) -> kube::Client {
    kube::Client::new(env.server.local_service(account_user(name)), "default")
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    })
}

/// One request to the accounts routes; answers status, headers and JSON body.
async fn route(
    accounts: &Accounts,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
    peer: Option<UserInfo>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
    let body: Body = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut req = req.body(body).unwrap();
    req.extensions_mut().insert(mini_apiserver::RemoteAddr(
        "127.0.0.1:40000".parse().unwrap(),
    ));
    let response = accounts.handle(req, peer).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// Logs in; answers the cookie header value and the CSRF token.
async fn login(accounts: &Accounts, name: &str, password: &str) -> (String, String) {
    let (status, headers, body) = route(
        accounts,
        Method::POST,
        "/v1-mini/session/login",
        &[],
        Some(json!({"name": name, "password": password})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    (cookie, body["csrfToken"].as_str().unwrap().to_string())
}

fn cookie_headers(cookie: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HOST.parse().unwrap());
    h.insert(header::COOKIE, cookie.parse().unwrap());
    for (k, v) in extra {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[tokio::test]
async fn edit_account_in_namespace_a_creates_there_and_is_refused_in_b() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("bob", "edit", &["a"]))
        .await
        .unwrap();
    let bob = account_client(&f.env, "bob");
    let created = raw(
        &bob,
        Method::POST,
        "/apis/apps/v1/namespaces/a/deployments",
        Some(deployment("web")),
    )
    .await;
    assert!(created.is_ok(), "{created:?}");
    let refused = raw(
        &bob,
        Method::POST,
        "/apis/apps/v1/namespaces/b/deployments",
        Some(deployment("web")),
    )
    .await;
    assert_eq!(refused, Err(403));
    // the audit log names who did what
    let log = std::fs::read_to_string(f.dir.path().join("audit.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["user"]["username"] == "bob"
        && l["verb"] == "create"
        && l["objectRef"]["resource"] == "deployments"
        && l["objectRef"]["namespace"] == "a"
        && l["responseStatus"]["code"] == 201));
    assert!(lines
        .iter()
        .any(|l| l["objectRef"]["namespace"] == "b" && l["responseStatus"]["code"] == 403));
}

#[tokio::test]
async fn admin_impersonating_an_account_gets_only_its_rights() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("gina", "edit", &["a"]))
        .await
        .unwrap();
    let admin = f.env.admin_client();
    let as_gina = |ns: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/namespaces/{ns}/configmaps"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Impersonate-User", "gina")
            .header("Impersonate-Group", mini_accounts::ACCOUNTS_GROUP)
            .body(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
                    .to_string()
                    .into_bytes(),
            )
            .unwrap()
    };
    assert!(admin.request_text(as_gina("a")).await.is_ok());
    match admin.request_text(as_gina("b")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("User \"gina\""), "{}", s.message);
        }
        other => panic!("impersonated write in b: {other:?}"),
    }
    // an account cannot impersonate anybody
    let gina = account_client(&f.env, "gina");
    let mut req = as_gina("a");
    req.headers_mut()
        .insert("Impersonate-User", "system:admin".parse().unwrap());
    req.headers_mut().remove("Impersonate-Group");
    match gina.request_text(req).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("impersonation by an account: {other:?}"),
    }
}

#[tokio::test]
async fn view_account_cannot_create() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("viewer", "view", &[]))
        .await
        .unwrap();
    let viewer = account_client(&f.env, "viewer");
    assert!(raw(
        &viewer,
        Method::GET,
        "/apis/apps/v1/namespaces/a/deployments",
        None
    )
    .await
    .is_ok());
    let refused = raw(
        &viewer,
        Method::POST,
        "/apis/apps/v1/namespaces/a/deployments",
        Some(deployment("web")),
    )
    .await;
    assert_eq!(refused, Err(403));
}

#[tokio::test]
async fn namespace_admin_cannot_grant_more_than_it_holds() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("lead", "admin", &["a"]))
        .await
        .unwrap();
    let lead = account_user("lead");
    // a sub-account inside its namespace with rights it holds: fine
    let sub = f.accounts.add(&lead, add("dev", "edit", &["a"])).await;
    assert!(sub.is_ok(), "{sub:?}");
    // another namespace, or cluster-wide rights: Kubernetes' escalation check refuses
    for (name, role, ns) in [
        ("dev2", "edit", vec!["b"]),
        ("root", "cluster-admin", vec![]),
        ("dev3", "view", vec![]),
    ] {
        let result = f.accounts.add(&lead, add(name, role, &ns)).await;
        assert!(
            matches!(result, Err(AccountsError::Api { code: 403, .. })),
            "{name}: {result:?}"
        );
        assert!(f.accounts.records().get(name).await.unwrap().is_none());
    }
    // the same through kubectl-like requests: a RoleBinding in a to cluster-admin
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "sneaky"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "lead"}]
    });
    let client = account_client(&f.env, "lead");
    let refused = raw(
        &client,
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings",
        Some(binding),
    )
    .await;
    assert_eq!(refused, Err(403));
    // and a Role with rules it does not hold
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}]
    });
    let refused = raw(
        &client,
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles",
        Some(role),
    )
    .await;
    assert_eq!(refused, Err(403));
    // the namespace admin may not remove an account bound cluster-wide
    f.accounts
        .add(&ApiServer::admin_user(), add("other", "view", &[]))
        .await
        .unwrap();
    assert!(matches!(
        f.accounts.remove(&lead, "other").await,
        Err(AccountsError::Forbidden(_))
    ));
    // it sees its own sub-account but not the cluster-wide one
    let names: Vec<String> = f
        .accounts
        .list(&lead)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(names.contains(&"dev".to_string()), "{names:?}");
    assert!(!names.contains(&"other".to_string()), "{names:?}");
}

#[tokio::test]
async fn login_session_authenticates_and_writes_need_csrf_and_origin() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("carol", "edit", &["a"]))
        .await
        .unwrap();
    let (cookie, csrf) = login(&f.accounts, "carol", "carol-password").await;
    let uri: http::Uri = "/apis/apps/v1/namespaces/a/deployments".parse().unwrap();
    let user = f
        .accounts
        .authenticate_session(&Method::GET, &uri, &cookie_headers(&cookie, &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user, account_user("carol"));
    for extra in [
        vec![],
        vec![("origin", ORIGIN)],
        vec![("x-csrf-token", csrf.as_str())],
        vec![
            ("origin", "https://evil.example"),
            ("x-csrf-token", csrf.as_str()),
        ],
    ] {
        let refused = f
            .accounts
            .authenticate_session(&Method::POST, &uri, &cookie_headers(&cookie, &extra))
            .await
            .unwrap();
        assert_eq!(refused.unwrap_err().code, 403, "{extra:?}");
    }
    let ok = f
        .accounts
        .authenticate_session(
            &Method::POST,
            &uri,
            &cookie_headers(&cookie, &[("origin", ORIGIN), ("x-csrf-token", &csrf)]),
        )
        .await
        .unwrap();
    assert!(ok.is_ok());
    // the account API too: a cookie POST without the CSRF token is refused
    let (status, _, _) = route(
        &f.accounts,
        Method::POST,
        "/v1-mini/accounts",
        &[("cookie", &cookie)],
        Some(json!({"name": "x", "password": "x-password", "role": "view", "namespaces": ["a"]})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // who am I
    let (status, _, me) = route(
        &f.accounts,
        Method::GET,
        "/v1-mini/session",
        &[("cookie", &cookie)],
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"], "carol");
    assert_eq!(me["csrfToken"], csrf.as_str());
    // a new accounts service over the same store (a restart) still knows the session
    let restarted = Accounts::new(
        f.env.server.clone(),
        config(f.dir.path(), SessionLimits::default()),
    );
    assert!(restarted
        .authenticate_session(&Method::GET, &uri, &cookie_headers(&cookie, &[]))
        .await
        .unwrap()
        .is_ok());
    // logout ends it
    let (status, _, _) = route(
        &f.accounts,
        Method::POST,
        "/v1-mini/session/logout",
        &[
            ("cookie", &cookie),
            ("origin", ORIGIN),
            ("x-csrf-token", &csrf),
        ],
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let gone = f
        .accounts
        .authenticate_session(&Method::GET, &uri, &cookie_headers(&cookie, &[]))
        .await
        .unwrap();
    assert_eq!(gone.unwrap_err().code, 401);
}

#[tokio::test]
async fn expired_session_is_401() {
    let f = fixture_with(SessionLimits {
        idle: 1,
        lifetime: 3600,
    })
    .await;
    f.accounts
        .add(&ApiServer::admin_user(), add("dave", "view", &[]))
        .await
        .unwrap();
    let (cookie, _) = login(&f.accounts, "dave", "dave-password").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _, _) = route(
        &f.accounts,
        Method::GET,
        "/v1-mini/session",
        &[("cookie", &cookie)],
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sixth_failed_login_is_429_with_retry_after() {
    let f = fixture().await;
    f.accounts
        .add(&ApiServer::admin_user(), add("erin", "view", &[]))
        .await
        .unwrap();
    for _ in 0..5 {
        let (status, _, _) = route(
            &f.accounts,
            Method::POST,
            "/v1-mini/session/login",
            &[],
            Some(json!({"name": "erin", "password": "wrong-password"})),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, _) = route(
        &f.accounts,
        Method::POST,
        "/v1-mini/session/login",
        &[],
        Some(json!({"name": "erin", "password": "erin-password"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
    // an unknown name answers exactly like a wrong password
    let f2 = fixture().await;
    let (status, _, body) = route(
        &f2.accounts,
        Method::POST,
        "/v1-mini/session/login",
        &[],
        Some(json!({"name": "nobody", "password": "whatever1"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "invalid name or password");
}

#[tokio::test]
async fn passwd_ends_sessions_and_tokens_and_rm_removes_bindings() {
    let f = fixture().await;
    let admin = ApiServer::admin_user();
    f.accounts
        .add(&admin, add("frank", "edit", &["a", "b"]))
        .await
        .unwrap();
    let (cookie, _) = login(&f.accounts, "frank", "frank-password").await;
    let (status, headers, _) = route(
        &f.accounts,
        Method::GET,
        "/v1-mini/session/kubeconfig",
        &[("cookie", &cookie)],
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("frank.kubeconfig"));
    let token = f
        .accounts
        .records()
        .issue_token("frank", mini_accounts::now_unix() + 60)
        .await
        .unwrap();
    assert_eq!(
        f.accounts
            .authenticate_token(&token)
            .await
            .unwrap()
            .unwrap(),
        account_user("frank")
    );
    f.accounts
        .set_password(
            &admin,
            "frank",
            PasswordRequest {
                password: "new-frank-password".into(),
                current_password: None,
            },
        )
        .await
        .unwrap();
    let (status, _, _) = route(
        &f.accounts,
        Method::GET,
        "/v1-mini/session",
        &[("cookie", &cookie)],
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.accounts
            .authenticate_token(&token)
            .await
            .unwrap()
            .unwrap_err()
            .code,
        401
    );
    login(&f.accounts, "frank", "new-frank-password").await;
    // people change their own password only with the current one
    let wrong = f
        .accounts
        .set_password(
            &account_user("frank"),
            "frank",
            PasswordRequest {
                password: "another-password".into(),
                current_password: Some("bad".into()),
            },
        )
        .await;
    assert!(matches!(wrong, Err(AccountsError::Forbidden(_))));
    f.accounts.remove(&admin, "frank").await.unwrap();
    let admin_client = f.env.admin_client();
    for ns in ["a", "b"] {
        let list = raw(
            &admin_client,
            Method::GET,
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{ns}: {list}");
    }
    assert!(f.accounts.records().get("frank").await.unwrap().is_none());
}
