//! Certificates: the generated chain under rustls, `certs generate` on disk, and the request
//! sequences of `certs install` against a recording kube client double.
//!
//! The double stands in for the API server behind `kube::Client::new`: it records every
//! request (method, path, query, content type, body) and answers from a small in-memory
//! store of one Secret and one MutatingWebhookConfiguration, applying writes the way the API
//! server does (a JSON patch with its `test` operations, a replace that checks
//! `resourceVersion`). The tests assert the exact sequence of requests.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{Method, Request, Response};
use ingress_tap::certs::install::plan::{self, RenewReason};
use ingress_tap::certs::install::{install, InstallError, SecretAction};
use ingress_tap::certs::{self, GeneratedCerts};
use ingress_tap::cli::certs::InstallOptions;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

const NAMESPACE: &str = "ingress-tap";
const SERVICE: &str = "ingress-tap";
const SECRET: &str = "ingress-tap-tls";
const CONFIG: &str = "ingress-tap";
const SECRET_PATH: &str = "/api/v1/namespaces/ingress-tap/secrets/ingress-tap-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/ingress-tap/secrets";
const CONFIG_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ingress-tap";
const FIELD_MANAGER: Option<&str> = Some("fieldManager=ingress-tap");

fn names() -> Vec<String> {
    certs::service_names(SERVICE, NAMESPACE)
}

// ---- the chain under rustls ---------------------------------------------------------------

fn verify(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let chain: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn generated_chain_verifies_for_the_service_names_only() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    for name in names() {
        verify(&generated.ca_pem, &generated.cert_pem, &name)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for other in [
        "other.ingress-tap.svc",
        "ingress-tap.default.svc",
        "localhost",
    ] {
        let error = verify(&generated.ca_pem, &generated.cert_pem, other).unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{other}: {error:?}"
        );
    }
    // Another CA does not vouch for it.
    let stranger = certs::generate(&names(), "other CA").unwrap();
    assert!(verify(&stranger.ca_pem, &generated.cert_pem, &names()[0]).is_err());
}

#[test]
fn generated_certificate_has_a_sane_lifetime() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let not_after = plan::certificate_not_after(generated.cert_pem.as_bytes()).unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(not_after > now + Duration::days(300), "{not_after}");
    assert!(not_after <= now + certs::SERVING_LIFETIME, "{not_after}");
    let ca_not_after = plan::certificate_not_after(generated.ca_pem.as_bytes()).unwrap();
    assert!(
        ca_not_after > not_after,
        "the CA outlives the serving certificate"
    );
}

#[test]
fn assessment_follows_names_expiry_and_keys() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let secret = secret_of(&generated, &generated.ca_pem);
    let now = OffsetDateTime::now_utc();
    let window = Duration::days(30);
    assert!(matches!(
        plan::assess_secret(Some(&secret), &names(), now, window),
        plan::SecretVerdict::Keep { .. }
    ));
    assert!(matches!(
        plan::assess_secret(Some(&secret), &names(), now + Duration::days(340), window),
        plan::SecretVerdict::Renew(RenewReason::ExpiresSoon(_))
    ));
    let other_names = certs::service_names("other", NAMESPACE);
    assert!(matches!(
        plan::assess_secret(Some(&secret), &other_names, now, window),
        plan::SecretVerdict::Renew(RenewReason::Untrusted(_))
    ));
    let mut wrong_key = secret.clone();
    let stranger = certs::generate(&names(), "other CA").unwrap();
    wrong_key.data.as_mut().unwrap().insert(
        "tls.key".to_owned(),
        ByteString(stranger.key_pem.into_bytes()),
    );
    assert!(matches!(
        plan::assess_secret(Some(&wrong_key), &names(), now, window),
        plan::SecretVerdict::Renew(RenewReason::KeyMismatch(_))
    ));
    assert_eq!(
        plan::assess_secret(None, &names(), now, window),
        plan::SecretVerdict::Renew(RenewReason::Missing)
    );
}

// ---- certs generate -------------------------------------------------------------------------

fn generate_command(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .args([
            "certs",
            "generate",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn generate_writes_the_files_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = generate_command(&out, &[]);
    assert!(output.status.success(), "{output:?}");

    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let cert = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    let key = std::fs::read_to_string(out.join("tls.key")).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    for name in names() {
        verify(&ca, &cert, &name).unwrap();
    }
    ingress_tap::tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), "test").unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim())
        .unwrap();
    assert_eq!(bundle, ca.as_bytes(), "stdout is exactly the caBundle");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("PRIVATE"), "{stderr}");
    let names_in_dir: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names_in_dir.len(), 3, "{names_in_dir:?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    assert!(generate_command(dir.path(), &[]).status.success());
    let first_key = std::fs::read(dir.path().join("tls.key")).unwrap();
    let first_ca = std::fs::read(dir.path().join("ca.crt")).unwrap();

    let refused = generate_command(dir.path(), &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(dir.path().join("tls.key")).unwrap(),
        first_key
    );
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), first_ca);

    let forced = generate_command(dir.path(), &["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        std::fs::read(dir.path().join("tls.key")).unwrap(),
        first_key
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

// ---- certs install against a recording double -----------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    method: Method,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: Option<Value>,
}

/// The shape of a request, for the sequence assertions.
fn shape(recorded: &Recorded) -> (Method, &str, Option<&str>) {
    (
        recorded.method.clone(),
        recorded.path.as_str(),
        recorded.query.as_deref(),
    )
}

#[derive(Default)]
struct FakeApiServer {
    secret: Option<Value>,
    webhook_config: Option<Value>,
    resource_version: u64,
    requests: Vec<Recorded>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApiServer {
    fn stamp(&mut self, object: &mut Value) {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
    }

    fn answer(&mut self, recorded: &Recorded) -> (u16, Value) {
        let body = recorded.body.clone();
        match (&recorded.method, recorded.path.as_str()) {
            (&Method::GET, SECRET_PATH) => match &self.secret {
                Some(secret) => (200, secret.clone()),
                None => status(404, "NotFound", "secrets \"ingress-tap-tls\" not found"),
            },
            (&Method::POST, SECRETS_PATH) => {
                if self.secret.is_some() {
                    return status(409, "AlreadyExists", "already exists");
                }
                let mut secret = body.unwrap_or_default();
                self.stamp(&mut secret);
                self.secret = Some(secret.clone());
                (201, secret)
            }
            (&Method::PUT, SECRET_PATH) => {
                let mut secret = body.unwrap_or_default();
                let current = self
                    .secret
                    .as_ref()
                    .map(|current| current["metadata"]["resourceVersion"].clone());
                if current != Some(secret["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict", "the object has been modified");
                }
                self.stamp(&mut secret);
                self.secret = Some(secret.clone());
                (200, secret)
            }
            (&Method::GET, CONFIG_PATH) => match &self.webhook_config {
                Some(config) => (200, config.clone()),
                None => status(404, "NotFound", "not found"),
            },
            (&Method::PATCH, CONFIG_PATH) => {
                let Some(mut config) = self.webhook_config.clone() else {
                    return status(404, "NotFound", "not found");
                };
                let patch: json_patch::Patch =
                    serde_json::from_value(body.unwrap_or_default()).unwrap();
                if let Err(error) = json_patch::patch(&mut config, &patch) {
                    return status(422, "Invalid", &error.to_string());
                }
                self.stamp(&mut config);
                self.webhook_config = Some(config.clone());
                (200, config)
            }
            _ => status(405, "MethodNotAllowed", "unexpected request"),
        }
    }
}

/// A kube client whose every request is recorded and answered by `server`.
fn client_for(server: &Arc<Mutex<FakeApiServer>>) -> kube::Client {
    let server = server.clone();
    let service = tower::service_fn(move |request: Request<kube::client::Body>| {
        let server = server.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let recorded = Recorded {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                // kube writes `?&name=value`; the empty pair means nothing to the API
                // server, so the record keeps only the pairs.
                query: parts.uri.query().map(|query| {
                    query
                        .split('&')
                        .filter(|pair| !pair.is_empty())
                        .collect::<Vec<_>>()
                        .join("&")
                }),
                content_type: parts
                    .headers
                    .get(hyper::http::header::CONTENT_TYPE)
                    .map(|value| value.to_str().unwrap().to_owned()),
                body: (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap()),
            };
            let mut server = server.lock().unwrap();
            let (code, answer) = server.answer(&recorded);
            server.requests.push(recorded);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn options() -> InstallOptions {
    InstallOptions {
        namespace: NAMESPACE.to_owned(),
        service: SERVICE.to_owned(),
        secret: SECRET.to_owned(),
        webhook_config: CONFIG.to_owned(),
        renew_before_days: 30,
        kubeconfig: None,
    }
}

fn webhook_config(ca_bundles: &[Option<&[u8]>]) -> Value {
    let webhooks: Vec<Value> = ca_bundles
        .iter()
        .enumerate()
        .map(|(index, bundle)| {
            let mut client_config = json!({
                "service": {"name": SERVICE, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
            });
            if let Some(bundle) = bundle {
                client_config["caBundle"] = json!(certs::ca_bundle(bundle));
            }
            json!({
                "name": format!("hook-{index}.ingress-tap.io"),
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIG, "resourceVersion": "100"},
        "webhooks": webhooks,
    })
}

fn secret_of(generated: &GeneratedCerts, ca_bundle: &str) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(SECRET.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            resource_version: Some("7".to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(generated.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(generated.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_owned(),
                ByteString(ca_bundle.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

fn secret_data(secret: &Value, key: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

fn ca_bundles_of(config: &Value) -> Vec<Option<Vec<u8>>> {
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|webhook| {
            webhook["clientConfig"]["caBundle"].as_str().map(|bundle| {
                base64::engine::general_purpose::STANDARD
                    .decode(bundle)
                    .unwrap()
            })
        })
        .collect()
}

fn take_requests(server: &Arc<Mutex<FakeApiServer>>) -> Vec<Recorded> {
    std::mem::take(&mut server.lock().unwrap().requests)
}

#[tokio::test]
async fn first_install_creates_the_secret_and_patches_every_webhook() {
    let server = Arc::new(Mutex::new(FakeApiServer {
        webhook_config: Some(webhook_config(&[None, Some(b"stale CA")])),
        ..Default::default()
    }));
    let now = OffsetDateTime::now_utc();
    let report = install(client_for(&server), &options(), now).await.unwrap();
    assert_eq!(report.secret, SecretAction::Created);
    assert_eq!(
        report.patched_webhooks,
        ["hook-0.ingress-tap.io", "hook-1.ingress-tap.io"]
    );

    let requests = take_requests(&server);
    let shapes: Vec<_> = requests.iter().map(shape).collect();
    assert_eq!(
        shapes,
        [
            (Method::GET, SECRET_PATH, None),
            (Method::POST, SECRETS_PATH, FIELD_MANAGER),
            (Method::GET, CONFIG_PATH, None),
            (Method::PATCH, CONFIG_PATH, FIELD_MANAGER),
        ]
    );

    let posted = requests[1].body.as_ref().unwrap();
    assert_eq!(posted["type"], "kubernetes.io/tls");
    assert_eq!(posted["metadata"]["name"], SECRET);
    assert_eq!(posted["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        posted["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ingress-tap"
    );
    let keys: Vec<&String> = posted["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let ca = String::from_utf8(secret_data(posted, "ca.crt")).unwrap();
    let cert = String::from_utf8(secret_data(posted, "tls.crt")).unwrap();
    for name in names() {
        verify(&ca, &cert, &name).unwrap();
    }

    let patch = &requests[3];
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    let expected_bundle = certs::ca_bundle(&ca);
    assert_eq!(
        patch.body.as_ref().unwrap(),
        &json!([
            {"op": "test", "path": "/webhooks/0/name", "value": "hook-0.ingress-tap.io"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": expected_bundle},
            {"op": "test", "path": "/webhooks/1/name", "value": "hook-1.ingress-tap.io"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": expected_bundle},
        ])
    );
    let config = server.lock().unwrap().webhook_config.clone().unwrap();
    assert_eq!(
        ca_bundles_of(&config),
        [Some(ca.clone().into_bytes()), Some(ca.into_bytes())]
    );

    // A second run finds everything current and writes nothing.
    let again = install(client_for(&server), &options(), now).await.unwrap();
    assert_eq!(again.secret, SecretAction::Kept);
    assert!(again.patched_webhooks.is_empty());
    let shapes: Vec<_> = take_requests(&server)
        .iter()
        .map(|recorded| (recorded.method.clone(), recorded.path.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            (Method::GET, SECRET_PATH.to_owned()),
            (Method::GET, CONFIG_PATH.to_owned())
        ]
    );
}

#[tokio::test]
async fn near_expiry_replaces_the_secret_and_keeps_the_old_ca_trusted() {
    let server = Arc::new(Mutex::new(FakeApiServer {
        webhook_config: Some(webhook_config(&[None])),
        ..Default::default()
    }));
    let now = OffsetDateTime::now_utc();
    install(client_for(&server), &options(), now).await.unwrap();
    take_requests(&server);
    let old = server.lock().unwrap().secret.clone().unwrap();
    let old_version = old["metadata"]["resourceVersion"].clone();

    // 340 days on, a 365-day certificate is inside the 30-day renewal window.
    let later = now + Duration::days(340);
    let report = install(client_for(&server), &options(), later)
        .await
        .unwrap();
    assert!(
        matches!(
            report.secret,
            SecretAction::Renewed(RenewReason::ExpiresSoon(_))
        ),
        "{:?}",
        report.secret
    );
    let requests = take_requests(&server);
    let shapes: Vec<_> = requests.iter().map(shape).collect();
    assert_eq!(
        shapes,
        [
            (Method::GET, SECRET_PATH, None),
            (Method::PUT, SECRET_PATH, FIELD_MANAGER),
            (Method::GET, CONFIG_PATH, None),
            (Method::PATCH, CONFIG_PATH, FIELD_MANAGER),
        ]
    );
    let put = requests[1].body.as_ref().unwrap();
    assert_eq!(
        put["metadata"]["resourceVersion"], old_version,
        "the replace is conditional on what was read"
    );
    assert_ne!(secret_data(put, "tls.crt"), secret_data(&old, "tls.crt"));

    // The new bundle trusts the new certificate, and the old one the kubelet may still serve.
    let bundle = String::from_utf8(secret_data(put, "ca.crt")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let new_cert = String::from_utf8(secret_data(put, "tls.crt")).unwrap();
    let old_cert = String::from_utf8(secret_data(&old, "tls.crt")).unwrap();
    verify(&bundle, &new_cert, &names()[0]).unwrap();
    verify(&bundle, &old_cert, &names()[0]).unwrap();
    let config = server.lock().unwrap().webhook_config.clone().unwrap();
    assert_eq!(ca_bundles_of(&config), [Some(bundle.into_bytes())]);
}

#[tokio::test]
async fn a_config_already_holding_the_ca_is_not_patched() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let secret = serde_json::to_value(secret_of(&generated, &generated.ca_pem)).unwrap();
    let ca = generated.ca_pem.as_bytes();
    let server = Arc::new(Mutex::new(FakeApiServer {
        secret: Some(secret),
        webhook_config: Some(webhook_config(&[Some(ca), Some(ca)])),
        ..Default::default()
    }));
    let report = install(client_for(&server), &options(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.secret, SecretAction::Kept);
    assert!(report.patched_webhooks.is_empty());
    let requests = take_requests(&server);
    let shapes: Vec<_> = requests.iter().map(shape).collect();
    assert_eq!(
        shapes,
        [
            (Method::GET, SECRET_PATH, None),
            (Method::GET, CONFIG_PATH, None)
        ]
    );
}

#[tokio::test]
async fn only_the_stale_webhook_is_patched() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let secret = serde_json::to_value(secret_of(&generated, &generated.ca_pem)).unwrap();
    let ca = generated.ca_pem.as_bytes();
    let server = Arc::new(Mutex::new(FakeApiServer {
        secret: Some(secret),
        webhook_config: Some(webhook_config(&[Some(ca), Some(b"old")])),
        ..Default::default()
    }));
    let report = install(client_for(&server), &options(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.patched_webhooks, ["hook-1.ingress-tap.io"]);
    let requests = take_requests(&server);
    assert_eq!(requests.len(), 3);
    let operations = requests[2].body.as_ref().unwrap().as_array().unwrap();
    assert_eq!(operations.len(), 2);
    assert_eq!(operations[0]["path"], "/webhooks/1/name");
}

#[tokio::test]
async fn a_secret_without_ca_is_replaced() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let mut secret = secret_of(&generated, &generated.ca_pem);
    secret.data.as_mut().unwrap().remove("ca.crt");
    let server = Arc::new(Mutex::new(FakeApiServer {
        secret: Some(serde_json::to_value(secret).unwrap()),
        webhook_config: Some(webhook_config(&[None])),
        ..Default::default()
    }));
    let report = install(client_for(&server), &options(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        report.secret,
        SecretAction::Renewed(RenewReason::MissingKey("ca.crt"))
    );
    let methods: Vec<Method> = take_requests(&server)
        .into_iter()
        .map(|recorded| recorded.method)
        .collect();
    assert_eq!(
        methods,
        [Method::GET, Method::PUT, Method::GET, Method::PATCH]
    );
}

#[tokio::test]
async fn a_secret_of_another_type_is_refused_without_writing() {
    let generated = certs::generate(&names(), "test CA").unwrap();
    let mut secret = secret_of(&generated, &generated.ca_pem);
    secret.type_ = Some("Opaque".to_owned());
    let server = Arc::new(Mutex::new(FakeApiServer {
        secret: Some(serde_json::to_value(secret).unwrap()),
        webhook_config: Some(webhook_config(&[None])),
        ..Default::default()
    }));
    let error = install(client_for(&server), &options(), OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(matches!(error, InstallError::SecretType { .. }), "{error}");
    assert!(error.to_string().contains("Opaque"));
    assert_eq!(take_requests(&server).len(), 1);
}

#[tokio::test]
async fn a_missing_webhook_config_is_reported() {
    let server = Arc::new(Mutex::new(FakeApiServer::default()));
    let error = install(client_for(&server), &options(), OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(
        matches!(error, InstallError::WebhookConfigMissing(ref name) if name == CONFIG),
        "{error}"
    );
}

#[tokio::test]
async fn names_that_could_bend_a_request_path_are_refused_before_any_request() {
    let server = Arc::new(Mutex::new(FakeApiServer::default()));
    let mut bad = options();
    bad.webhook_config = "ingress-tap/../x?y=1".to_owned();
    let error = install(client_for(&server), &bad, OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(matches!(error, InstallError::InvalidName { .. }), "{error}");
    assert!(take_requests(&server).is_empty());
}

/// The serving pair the webhook takes: checked by `ingress_tap::tls` against what `certs`
/// generates.
mod serving_pair {
    use ingress_tap::tls::*;
    use rustls_pki_types::UnixTime;
    use std::path::Path;

    #[test]
    fn loads_a_generated_pair_and_rejects_a_mismatch() {
        let a = ingress_tap::certs::generate(&["localhost".into()], "a").unwrap();
        let b = ingress_tap::certs::generate(&["localhost".into()], "b").unwrap();
        certified_key_from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), "a").unwrap();
        let err =
            certified_key_from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "a").unwrap_err();
        assert!(matches!(err, TlsError::Pair(_)), "{err}");
        let err = certified_key_from_pem(b"", a.key_pem.as_bytes(), "empty").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = certified_key_from_pem(a.cert_pem.as_bytes(), b"", "nokey").unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }

    #[test]
    fn a_pair_is_taken_only_when_valid_now_and_chained_to_the_ca() {
        use time::{Duration, OffsetDateTime};
        let names = ["localhost".to_owned()];
        let now = OffsetDateTime::now_utc();
        let path = Path::new("tls.crt");
        let ca_path = Path::new("ca.crt");
        let good = ingress_tap::certs::generate(&names, "good").unwrap();
        let other = ingress_tap::certs::generate(&names, "other").unwrap();
        let check = |certs: &ingress_tap::certs::GeneratedCerts, ca: &str| {
            check_pair(
                certs.cert_pem.as_bytes(),
                certs.key_pem.as_bytes(),
                Some((ca.as_bytes(), ca_path)),
                path,
                UnixTime::now(),
            )
        };
        let pair = check(&good, &good.ca_pem).unwrap();
        assert_eq!(pair.not_after, good.not_after.unix_timestamp());
        let err = check(&good, &other.ca_pem).unwrap_err();
        assert!(matches!(err, TlsError::Untrusted { .. }), "{err}");
        let err = check(&good, "").unwrap_err();
        assert!(matches!(err, TlsError::NoCa { .. }), "{err}");

        let expired = ingress_tap::certs::generate_with_validity(
            &names,
            "expired",
            now - Duration::days(400),
            now - Duration::days(35),
        )
        .unwrap();
        let err = check(&expired, &expired.ca_pem).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        let future = ingress_tap::certs::generate_with_validity(
            &names,
            "future",
            now + Duration::days(1),
            now + Duration::days(30),
        )
        .unwrap();
        let err = check(&future, &future.ca_pem).unwrap_err();
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");
        // Within the tolerated skew, a certificate that starts a minute from now is taken.
        let skewed = ingress_tap::certs::generate_with_validity(
            &names,
            "skewed",
            now + Duration::minutes(1),
            now + Duration::days(30),
        )
        .unwrap();
        check(&skewed, &skewed.ca_pem).unwrap();
    }

    #[test]
    fn readiness_fails_near_expiry_only_when_the_replacement_was_refused() {
        let names = ["localhost".to_owned()];
        let certs = ingress_tap::certs::generate(&names, "ca").unwrap();
        let pair = check_pair(
            certs.cert_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            None,
            Path::new("tls.crt"),
            UnixTime::now(),
        )
        .unwrap();
        let not_after = pair.not_after;
        let store = CertStore::new(pair);
        assert_eq!(store.readiness_problem(not_after - 60), None);
        let expired = store.readiness_problem(not_after).unwrap();
        assert!(expired.contains("expired"), "{expired}");
        store.refuse("tls.crt: the certificate expired at 2020".into());
        assert_eq!(store.readiness_problem(not_after - 2 * 3600), None);
        let near = store.readiness_problem(not_after - 60).unwrap();
        assert!(
            near.contains("expires at") && near.contains("refused: tls.crt"),
            "{near}"
        );
    }
}
