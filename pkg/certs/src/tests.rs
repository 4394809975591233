//! Unit tests for the CA, the server PKI, kubeconfigs, join tokens and the TLS configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::ca::{cert_sans, first_cert_der};

fn der_of(pem: &str) -> Vec<u8> {
    first_cert_der(pem, "test").unwrap()
}

fn sans(dns: &[&str], ips: &[IpAddr]) -> SubjectAltNames {
    SubjectAltNames {
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ips: ips.to_vec(),
    }
}

fn localhost_sans() -> SubjectAltNames {
    sans(
        &["localhost", "kubernetes.default.svc"],
        &[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    )
}

/// Checks that `cert_der` is signed by `ca` (issuer name and signature).
fn assert_signed_by(cert_der: &[u8], ca: &CertAuthority) {
    let (_, cert) = X509Certificate::from_der(cert_der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signature verifies with the ca key");
    assert!(ca.signed(cert_der));
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn validity_days(cert: &X509Certificate<'_>) -> i64 {
    let v = cert.validity();
    (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400
}

// ---- CA ----

#[test]
fn generated_ca_from_pem_round_trips() {
    let ca = CertAuthority::generate("mini-ca@1").unwrap();
    let loaded = CertAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.key_pem(), ca.key_pem());

    let cert_der = der_of(ca.cert_pem());
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["mini-ca@1"]);
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert!(validity_days(&cert) >= 3650);
    // Self-signed.
    cert.verify_signature(None).unwrap();

    // A certificate issued by the reloaded CA verifies against the original.
    let leaf = loaded.issue_client("u", &[]).unwrap();
    assert_signed_by(&der_of(&leaf.cert_pem), &ca);
}

#[test]
fn ca_from_pem_with_other_key_is_rejected() {
    let a = CertAuthority::generate("a").unwrap();
    let b = CertAuthority::generate("b").unwrap();
    let err = CertAuthority::from_pem(a.cert_pem(), &b.key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn ca_from_pem_with_garbage_or_leaf_is_rejected() {
    let ca = CertAuthority::generate("a").unwrap();
    assert!(matches!(
        CertAuthority::from_pem("not a pem", &ca.key_pem()),
        Err(CertError::Parse { .. })
    ));
    assert!(matches!(
        CertAuthority::from_pem(ca.cert_pem(), "garbage"),
        Err(CertError::Parse { .. })
    ));
    let leaf = ca.issue_client("u", &[]).unwrap();
    let err = CertAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(err.to_string().contains("not a ca"), "{err}");
}

// ---- issuing ----

#[test]
fn issued_server_cert_contains_sans_and_server_auth() {
    let ca = CertAuthority::generate("ca").unwrap();
    let wanted = localhost_sans();
    let issued = ca.issue_server("kube-apiserver", &wanted).unwrap();
    let der = der_of(&issued.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert_sans(&cert), wanted);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(!cert.is_ca());
    assert!((365..=366).contains(&validity_days(&cert)));
    assert_signed_by(&der, &ca);
}

#[test]
fn issued_certs_have_distinct_random_serials() {
    let ca = CertAuthority::generate("ca").unwrap();
    let a = der_of(&ca.issue_client("u", &[]).unwrap().cert_pem);
    let b = der_of(&ca.issue_client("u", &[]).unwrap().cert_pem);
    let serial = |d: &[u8]| {
        X509Certificate::from_der(d)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&a), serial(&b));
    assert!(serial(&a).len() >= 16);
}

#[test]
fn client_cert_identity_has_user_and_every_group() {
    let ca = CertAuthority::generate("ca").unwrap();
    let groups = vec![
        "system:masters".to_string(),
        "devs".to_string(),
        "ops".to_string(),
    ];
    let issued = ca.issue_client("alice", &groups).unwrap();
    let der = der_of(&issued.cert_pem);
    let id = identity_from_der(&der).unwrap();
    assert_eq!(
        id,
        ClientIdentity {
            user: "alice".to_string(),
            groups
        }
    );
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_signed_by(&der, &ca);
}

#[test]
fn client_cert_without_groups_has_empty_group_list() {
    let ca = CertAuthority::generate("ca").unwrap();
    let issued = ca.issue_client("bob", &[]).unwrap();
    let id = identity_from_der(&der_of(&issued.cert_pem)).unwrap();
    assert_eq!(id.user, "bob");
    assert!(id.groups.is_empty());
}

#[test]
fn identity_from_garbage_der_is_an_error() {
    assert!(matches!(
        identity_from_der(b"\x30\x03\x01\x01\x00"),
        Err(CertError::Parse { .. })
    ));
}

fn node_csr(sans_list: Vec<String>) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(sans_list).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, "system:node:n1");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).unwrap();
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr.der()).unwrap();
    let subject = parsed.certification_request_info.subject.as_raw().to_vec();
    (csr.pem().unwrap(), subject)
}

#[test]
fn sign_csr_client_keeps_subject_and_is_signed_by_ca() {
    let ca = CertAuthority::generate("ca").unwrap();
    let (csr_pem, csr_subject) = node_csr(vec!["ignored.example".to_string()]);
    let pem = ca.sign_csr(&csr_pem, false, 30).unwrap();
    let der = der_of(&pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.subject().as_raw(), csr_subject.as_slice());
    let id = identity_from_der(&der).unwrap();
    assert_eq!(id.user, "system:node:n1");
    assert_eq!(id.groups, ["system:nodes"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    // Client certificates carry no requested SANs.
    assert_eq!(cert_sans(&cert), SubjectAltNames::default());
    assert!((30..=31).contains(&validity_days(&cert)));
    assert_signed_by(&der, &ca);
}

#[test]
fn sign_csr_server_keeps_requested_sans() {
    let ca = CertAuthority::generate("ca").unwrap();
    let (csr_pem, csr_subject) = node_csr(vec!["n1".to_string(), "10.0.0.5".to_string()]);
    let pem = ca.sign_csr(&csr_pem, true, 365).unwrap();
    let der = der_of(&pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.subject().as_raw(), csr_subject.as_slice());
    assert_eq!(
        cert_sans(&cert),
        sans(&["n1"], &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))])
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert_signed_by(&der, &ca);
}

#[test]
fn sign_csr_rejects_garbage_and_tampered_requests() {
    let ca = CertAuthority::generate("ca").unwrap();
    assert!(matches!(
        ca.sign_csr("nope", false, 1),
        Err(CertError::Parse { .. })
    ));
    // A certificate is not a CSR.
    assert!(ca.sign_csr(ca.cert_pem(), false, 1).is_err());
    // Flip a byte inside the subject: the self-signature no longer verifies.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:aaaa");
    let csr = params.serialize_request(&key).unwrap();
    let mut der = csr.der().to_vec();
    let pos = der.windows(4).position(|w| w == b"aaaa").unwrap();
    der[pos] = b'b';
    let tampered = crate::ca::pem_encode("CERTIFICATE REQUEST", &der);
    let err = ca.sign_csr(&tampered, false, 1).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert!(ca.sign_csr(&csr.pem().unwrap(), false, 0).is_err());
}

// ---- server PKI ----

const PKI_FILES: [&str; 8] = [
    CA_CERT_FILE,
    CA_KEY_FILE,
    SERVING_CERT_FILE,
    SERVING_KEY_FILE,
    ADMIN_CERT_FILE,
    ADMIN_KEY_FILE,
    APISERVER_CLIENT_CERT_FILE,
    APISERVER_CLIENT_KEY_FILE,
];

#[test]
fn ensure_server_pki_creates_files_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server").join("tls");
    let first = ensure_server_pki(&dir, &localhost_sans()).unwrap();
    for f in PKI_FILES {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(mode_of(&dir), 0o700);
    for key in [
        CA_KEY_FILE,
        SERVING_KEY_FILE,
        ADMIN_KEY_FILE,
        APISERVER_CLIENT_KEY_FILE,
    ] {
        assert_eq!(mode_of(&dir.join(key)), 0o600, "{key}");
    }

    let second = ensure_server_pki(&dir, &localhost_sans()).unwrap();
    assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
    assert_eq!(first.ca.key_pem(), second.ca.key_pem());
    assert_eq!(first.serving, second.serving);
    assert_eq!(first.admin, second.admin);
    assert_eq!(first.apiserver_client, second.apiserver_client);

    // What is returned is what is on disk.
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read(CA_CERT_FILE), second.ca.cert_pem());
    assert_eq!(read(SERVING_CERT_FILE), second.serving.cert_pem);
    assert_eq!(read(ADMIN_KEY_FILE), second.admin.key_pem);
}

#[test]
fn ensure_server_pki_issues_expected_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    let admin = identity_from_der(&der_of(&pki.admin.cert_pem)).unwrap();
    assert_eq!(admin.user, "system:admin");
    assert_eq!(admin.groups, ["system:masters"]);
    let apiserver = identity_from_der(&der_of(&pki.apiserver_client.cert_pem)).unwrap();
    assert_eq!(apiserver.user, "system:kube-apiserver-kubelet-client");
    assert_eq!(apiserver.groups, ["system:masters"]);
    let serving_der = der_of(&pki.serving.cert_pem);
    let (_, serving) = X509Certificate::from_der(&serving_der).unwrap();
    assert_eq!(cert_sans(&serving), localhost_sans());
    for pem in [
        &pki.admin.cert_pem,
        &pki.apiserver_client.cert_pem,
        &pki.serving.cert_pem,
    ] {
        assert_signed_by(&der_of(pem), &pki.ca);
    }
    let ca_der = der_of(pki.ca.cert_pem());
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let cn = ca.subject().iter_common_name().next().unwrap();
    assert!(cn.as_str().unwrap().starts_with("mini-ca@"));
}

#[test]
fn ensure_server_pki_reissues_serving_for_new_san_but_keeps_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    let mut more = localhost_sans();
    more.dns.push("node1.example".to_string());
    more.ips.push(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)));
    let second = ensure_server_pki(tmp.path(), &more).unwrap();
    assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
    assert_eq!(first.ca.key_pem(), second.ca.key_pem());
    assert_eq!(first.admin, second.admin);
    assert_ne!(first.serving, second.serving);
    let der = der_of(&second.serving.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert_sans(&cert), more);
    assert_signed_by(&der, &second.ca);

    // A subset of the names already covered does not re-issue.
    let third = ensure_server_pki(tmp.path(), &sans(&["NODE1.example"], &[])).unwrap();
    assert_eq!(third.serving, second.serving);
    // Dropping names keeps the old ones (the union is kept when re-issuing).
    let fourth = ensure_server_pki(tmp.path(), &sans(&["other"], &[])).unwrap();
    let der = der_of(&fourth.serving.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let got = cert_sans(&cert);
    assert!(got.dns.contains(&"other".to_string()));
    assert!(got.dns.contains(&"node1.example".to_string()));
    assert_eq!(got.ips, more.ips);
}

#[test]
fn ensure_server_pki_reissues_leaf_signed_by_other_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    let other = CertAuthority::generate("other").unwrap();
    let foreign = other
        .issue_client("system:admin", &["system:masters".to_string()])
        .unwrap();
    std::fs::write(tmp.path().join(ADMIN_CERT_FILE), &foreign.cert_pem).unwrap();
    std::fs::write(tmp.path().join(ADMIN_KEY_FILE), &foreign.key_pem).unwrap();
    let second = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    assert_ne!(second.admin, foreign);
    assert_signed_by(&der_of(&second.admin.cert_pem), &first.ca);
    assert_eq!(first.serving, second.serving);
}

#[test]
fn ensure_server_pki_names_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    let serving = tmp.path().join(SERVING_CERT_FILE);
    std::fs::write(
        &serving,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = ensure_server_pki(tmp.path(), &localhost_sans())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains(&serving.display().to_string()),
        "{err}"
    );

    let ca_key = tmp.path().join(CA_KEY_FILE);
    std::fs::write(&ca_key, "garbage").unwrap();
    let err = ensure_server_pki(tmp.path(), &localhost_sans())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains(&ca_key.display().to_string()),
        "{err}"
    );
}

#[test]
fn ensure_server_pki_refuses_to_regenerate_ca_without_key() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
    let ca_key = tmp.path().join(CA_KEY_FILE);
    std::fs::remove_file(&ca_key).unwrap();
    let err = ensure_server_pki(tmp.path(), &localhost_sans())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains(&ca_key.display().to_string()),
        "{err}"
    );
    // The CA certificate is left untouched.
    let on_disk = std::fs::read_to_string(tmp.path().join(CA_CERT_FILE)).unwrap();
    assert_eq!(on_disk, first.ca.cert_pem());
}

// ---- kubeconfig ----

#[test]
fn kubeconfig_yaml_has_default_cluster_user_and_context() {
    let ca = CertAuthority::generate("ca").unwrap();
    let client = ca
        .issue_client("system:admin", &["system:masters".to_string()])
        .unwrap();
    let url = "https://127.0.0.1:6443";
    let yaml = kubeconfig_yaml(url, ca.cert_pem(), &client);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let b64 = |v: &serde_yaml_ng::Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(doc["apiVersion"].as_str(), Some("v1"));
    assert_eq!(doc["kind"].as_str(), Some("Config"));
    assert_eq!(doc["current-context"].as_str(), Some("default"));
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"].as_str(), Some("default"));
    assert_eq!(cluster["cluster"]["server"].as_str(), Some(url));
    assert_eq!(
        b64(&cluster["cluster"]["certificate-authority-data"]),
        ca.cert_pem()
    );
    let user = &doc["users"][0];
    assert_eq!(user["name"].as_str(), Some("default"));
    assert_eq!(
        b64(&user["user"]["client-certificate-data"]),
        client.cert_pem
    );
    assert_eq!(b64(&user["user"]["client-key-data"]), client.key_pem);
    let context = &doc["contexts"][0];
    assert_eq!(context["name"].as_str(), Some("default"));
    assert_eq!(context["context"]["cluster"].as_str(), Some("default"));
    assert_eq!(context["context"]["user"].as_str(), Some("default"));
}

#[test]
fn write_kubeconfig_creates_parents_with_mode_and_quotes_url() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("ca").unwrap();
    let client = ca.issue_client("u", &[]).unwrap();
    let path = tmp.path().join("a").join("b").join("kubeconfig.yaml");
    let url = "https://[::1]:6443/#\"odd\" \\ path";
    write_kubeconfig(&path, url, ca.cert_pem(), &client, 0o600).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["clusters"][0]["cluster"]["server"].as_str(), Some(url));

    // Rewriting replaces the file and applies the new mode; no temp files are left.
    write_kubeconfig(&path, "https://x:1", ca.cert_pem(), &client, 0o644).unwrap();
    assert_eq!(mode_of(&path), 0o644);
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["kubeconfig.yaml"]);
}

// ---- join tokens ----

#[test]
fn ca_bundle_hash_is_lowercase_sha256_of_the_exact_bytes() {
    assert_eq!(
        ca_bundle_hash(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_ne!(ca_bundle_hash("a\n"), ca_bundle_hash("a"));
}

#[test]
fn token_format_then_parse_round_trips() {
    let ca = CertAuthority::generate("ca").unwrap();
    let token = JoinToken::format(ca.cert_pem(), "s3cret");
    let hash = ca_bundle_hash(ca.cert_pem());
    assert_eq!(token, format!("K10{hash}::server:s3cret"));
    let parsed = JoinToken::parse(&token).unwrap();
    assert_eq!(
        parsed,
        JoinToken {
            ca_hash: Some(hash),
            secret: "s3cret".to_string(),
            bootstrap_id: None,
        }
    );
    assert!(parsed.ca_matches(ca.cert_pem()));
    assert!(!parsed.ca_matches("other"));
    // Surrounding whitespace (e.g. a trailing newline from a file) is ignored.
    assert_eq!(JoinToken::parse(&format!("{token}\n")).unwrap(), parsed);
}

#[test]
fn bare_secret_parses_without_ca_hash() {
    let parsed = JoinToken::parse("abc123").unwrap();
    assert_eq!(parsed.ca_hash, None);
    assert_eq!(parsed.secret, "abc123");
    assert!(parsed.ca_matches("anything"));
}

#[test]
fn malformed_tokens_are_rejected() {
    let hash = ca_bundle_hash("x");
    let bad = [
        String::new(),
        "   ".to_string(),
        "K10".to_string(),
        format!("K10{hash}"),
        format!("K10{hash}::server:"),
        format!("K10{hash}::server"),
        format!("K10{hash}::node:secret"),
        "K10abc::server:secret".to_string(),
        format!("K10{}::server:secret", "g".repeat(64)),
        "has space".to_string(),
    ];
    for token in bad {
        match JoinToken::parse(&token) {
            Err(CertError::Token(msg)) => {
                let first = msg.chars().next().unwrap();
                assert!(first.is_lowercase(), "message not lowercase: {msg}");
            }
            other => panic!("{token:?} gave {other:?}"),
        }
    }
}

#[test]
fn secret_matches_compares_the_whole_secret() {
    let token = JoinToken::parse("abcdef").unwrap();
    assert!(token.secret_matches("abcdef"));
    assert!(!token.secret_matches("abcdeg"));
    assert!(!token.secret_matches("abcde"));
    assert!(!token.secret_matches("abcdefg"));
    assert!(!token.secret_matches(""));
}

#[test]
fn ensure_token_file_generates_then_reuses_random_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("server").join("token");
    let secret = ensure_token_file(&path, None).unwrap();
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), secret);
    assert_eq!(ensure_token_file(&path, None).unwrap(), secret);
    let other = ensure_token_file(&tmp.path().join("other"), None).unwrap();
    assert_ne!(other, secret);
}

#[test]
fn ensure_token_file_given_secret_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("token");
    std::fs::write(&path, "old\n").unwrap();
    assert_eq!(ensure_token_file(&path, None).unwrap(), "old");
    assert_eq!(ensure_token_file(&path, Some("new")).unwrap(), "new");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "new");
    assert_eq!(mode_of(&path), 0o600);
    // A full token stores only its secret.
    let full = JoinToken::format("ca", "fromtoken");
    assert_eq!(ensure_token_file(&path, Some(&full)).unwrap(), "fromtoken");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "fromtoken");
    assert!(matches!(
        ensure_token_file(&path, Some("")),
        Err(CertError::Token(_))
    ));
}

// ---- TLS ----

mod handshake {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use crate::tls::{pem_certs, pem_key};

    fn client_config(ca_pem: &str, client: Option<&IssuedCert>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in pem_certs(ca_pem, "ca").unwrap() {
            roots.add(cert).unwrap();
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let mut config = match client {
            Some(c) => builder
                .with_client_auth_cert(
                    pem_certs(&c.cert_pem, "client").unwrap(),
                    pem_key(&c.key_pem, "client").unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Runs a handshake plus one echo; returns the server-side identity (if a client
    /// certificate was presented) or the server's error.
    async fn handshake(
        pki: &ServerPki,
        client: Option<&IssuedCert>,
    ) -> Result<Option<ClientIdentity>, String> {
        let server_config = server_tls_config(&pki.serving, pki.ca.cert_pem()).unwrap();
        let acceptor = TlsAcceptor::from(server_config);
        let connector = TlsConnector::from(client_config(pki.ca.cert_pem(), client));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);

        let server = async move {
            let mut tls = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            let (_, conn) = tls.get_ref();
            assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
            let identity = conn
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| identity_from_der(cert).unwrap());
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(identity)
        };
        let client = async move {
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector
                .connect(name, client_io)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"ping");
            Ok::<_, String>(())
        };
        let (server_result, client_result) = tokio::join!(server, client);
        let identity = server_result?;
        client_result?;
        Ok(identity)
    }

    fn pki() -> (tempfile::TempDir, ServerPki) {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ensure_server_pki(tmp.path(), &localhost_sans()).unwrap();
        (tmp, pki)
    }

    #[tokio::test]
    async fn admin_client_cert_is_verified_and_identified() {
        let (_tmp, pki) = pki();
        let identity = handshake(&pki, Some(&pki.admin)).await.unwrap();
        assert_eq!(
            identity,
            Some(ClientIdentity {
                user: "system:admin".to_string(),
                groups: vec!["system:masters".to_string()],
            })
        );
    }

    #[tokio::test]
    async fn csr_signed_client_cert_is_accepted() {
        let (_tmp, pki) = pki();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let csr = params.serialize_request(&key).unwrap();
        let cert_pem = pki.ca.sign_csr(&csr.pem().unwrap(), false, 1).unwrap();
        let client = IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        };
        let identity = handshake(&pki, Some(&client)).await.unwrap().unwrap();
        assert_eq!(identity.user, "system:node:n1");
    }

    #[tokio::test]
    async fn client_without_cert_is_accepted_anonymously() {
        let (_tmp, pki) = pki();
        assert_eq!(handshake(&pki, None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn client_cert_from_other_ca_is_rejected() {
        let (_tmp, pki) = pki();
        let other = CertAuthority::generate("other").unwrap();
        let foreign = other
            .issue_client("system:admin", &["system:masters".to_string()])
            .unwrap();
        let err = handshake(&pki, Some(&foreign)).await.unwrap_err();
        assert!(
            err.to_lowercase().contains("certificate"),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn server_cert_is_rejected_for_uncovered_name() {
        let (_tmp, pki) = pki();
        let server_config = server_tls_config(&pki.serving, pki.ca.cert_pem()).unwrap();
        let acceptor = TlsAcceptor::from(server_config);
        let connector = TlsConnector::from(client_config(pki.ca.cert_pem(), None));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("not-covered.example").unwrap();
        let (server, client) = tokio::join!(
            acceptor.accept(server_io),
            connector.connect(name, client_io)
        );
        assert!(client.is_err());
        assert!(server.is_err());
    }

    #[test]
    fn server_tls_config_rejects_bad_input() {
        let (_tmp, pki) = pki();
        let bad_key = IssuedCert {
            cert_pem: pki.serving.cert_pem.clone(),
            key_pem: "nope".to_string(),
        };
        assert!(matches!(
            server_tls_config(&bad_key, pki.ca.cert_pem()),
            Err(CertError::Tls(_))
        ));
        assert!(matches!(
            server_tls_config(&pki.serving, "no ca here"),
            Err(CertError::Tls(_))
        ));
        let config = server_tls_config(&pki.serving, pki.ca.cert_pem()).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
    /// A handshake against the kubelet server config using the public client config; the
    /// server's error when refused.
    async fn kubelet_handshake(pki: &ServerPki, client: &IssuedCert) -> Result<(), String> {
        let acceptor =
            TlsAcceptor::from(kubelet_server_tls_config(&pki.serving, pki.ca.cert_pem()).unwrap());
        let connector =
            TlsConnector::from(client_tls_config(pki.ca.cert_pem(), Some(client)).unwrap());
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = async move {
            let mut tls = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let client = async move {
            let name = ServerName::try_from("localhost").unwrap();
            if let Ok(mut tls) = connector.connect(name, client_io).await {
                let _ = tls.write_all(b"ping").await;
                let _ = tls.flush().await;
                // stay connected until the server is done (it may still send tickets)
                let mut rest = Vec::new();
                let _ = tls.read_to_end(&mut rest).await;
            }
        };
        let (server_result, ()) = tokio::join!(server, client);
        server_result
    }

    #[tokio::test]
    async fn kubelet_server_accepts_only_the_kubelet_client_cn() {
        let (_tmp, pki) = pki();
        kubelet_handshake(&pki, &pki.apiserver_client)
            .await
            .unwrap();
        let err = kubelet_handshake(&pki, &pki.admin).await.unwrap_err();
        assert!(err.contains("only"), "unexpected error: {err}");
    }

    #[test]
    fn sign_csr_as_client_forces_the_subject_and_keeps_the_key() {
        let (_tmp, pki) = pki();
        let (csr, key) = generate_csr("system:admin", &SubjectAltNames::default()).unwrap();
        let cert_pem = pki
            .ca
            .sign_csr_as_client(&csr, "system:node:n1", &["system:nodes".to_string()], 365)
            .unwrap();
        let der = der_of(&cert_pem);
        let id = identity_from_der(&der).unwrap();
        assert_eq!(id.user, "system:node:n1");
        assert_eq!(id.groups, ["system:nodes"]);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let key = crate::ca::parse_key(&key, "key").unwrap();
        assert!(crate::ca::key_matches_cert(&key, &cert));
        assert!(pki.ca.signed(&der));
    }

    #[test]
    fn generate_csr_sans_survive_server_signing() {
        let (_tmp, pki) = pki();
        let wanted = sans(&["node-1"], &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))]);
        let (csr, _key) = generate_csr("node-1", &wanted).unwrap();
        let cert_pem = pki.ca.sign_csr(&csr, true, 365).unwrap();
        let der = der_of(&cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert_sans(&cert), wanted);
    }
}
