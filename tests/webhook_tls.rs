//! The webhook over real TLS, called the way the API server calls it: AdmissionReview v1,
//! the server verified against a CA bundle the test made, the JSON patch applied to the
//! original object and the result read back as a Pod.

use crate::common;

use base64::Engine;
use common::*;
use ingress_tap::admission;
use ingress_tap::cli::webhook::WebhookOptions;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

fn sample_review() -> Value {
    serde_json::from_str(ingress_tap::admission::dev::SAMPLE_REVIEW).unwrap()
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Served {
    webhook: admission::RunningWebhook,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

async fn serve_with_files(max_body_bytes: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let generated =
        ingress_tap::certs::generate(&["localhost".into(), "127.0.0.1".into()], "test CA").unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    write_atomically(&cert, &generated.cert_pem);
    write_atomically(&key, &generated.key_pem);
    let webhook = admission::start(WebhookOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        config: None,
        dev_dir: None,
        max_body_bytes,
        max_connections: 64,
        client_timeout_seconds: 10,
        ..WebhookOptions::default()
    })
    .await
    .unwrap();
    Served {
        webhook,
        ca_pem: generated.ca_pem,
        cert,
        key,
        _dir: dir,
    }
}

/// Posts `review` and returns the status and the parsed body (or the raw text for errors).
async fn call(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    body_of(sender.send_request(post("/mutate", body)).await.unwrap()).await
}

fn apply_answer(review: &Value, answer: &Value) -> Value {
    let response = &answer["response"];
    assert_eq!(response["patchType"], "JSONPatch");
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

#[tokio::test]
async fn injects_over_verified_tls_with_http1_and_http2() {
    let served = serve_with_files(3 * 1024 * 1024).await;
    let addr = served.webhook.addr;
    let review = sample_review();

    let mut sender = http1_client(addr, &served.ca_pem).await.unwrap();
    let (status, body) = call(&mut sender, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    let mutated = apply_answer(&review, &answer);
    let pod: Pod = serde_json::from_value(mutated).unwrap();
    let spec = pod.spec.unwrap();
    assert!(spec
        .containers
        .iter()
        .any(|c| c.name == "ingress-collector"));

    // HTTP/2, which the API server negotiates when offered: the same answer.
    let mut h2 = http2_client(addr, &served.ca_pem).await.unwrap();
    let response = h2
        .send_request(post("/mutate", serde_json::to_vec(&review).unwrap()))
        .await
        .unwrap();
    let (status, body2) = body_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(body2, body, "HTTP/2 and HTTP/1.1 answers differ");

    // A client that trusts another CA must fail the handshake.
    let other = ingress_tap::certs::generate(&["localhost".into()], "other CA").unwrap();
    assert!(tls_connect(addr, &other.ca_pem, "localhost", &[])
        .await
        .is_err());

    // Health, readiness and the counted review.
    let health = served.webhook.health_addr;
    assert_eq!(http_get(health, "/healthz").await.0, 200);
    assert_eq!(http_get(health, "/readyz").await.0, 200);
    let (status, metrics) = http_get(health, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"ingress_tap_webhook_reviews_total{outcome="injected",reason=""} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("ingress_tap_webhook_review_duration_seconds_count 2"));
    served.webhook.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_the_promised_answer_and_the_server_keeps_serving() {
    let limit = 64 * 1024;
    let served = serve_with_files(limit).await;
    let addr = served.webhook.addr;
    let mut sender = http1_client(addr, &served.ca_pem).await.unwrap();

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not JSON", b"{not json".to_vec(), 400, "not JSON"),
        ("empty", Vec::new(), 400, "not JSON"),
        (
            "another kind",
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod"})).unwrap(),
            400,
            "not an AdmissionReview",
        ),
        (
            "no request",
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}))
                .unwrap(),
            400,
            "no request",
        ),
        (
            "request missing fields",
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}}))
                .unwrap(),
            400,
            "not an AdmissionReview",
        ),
        ("a JSON array", b"[1,2,3]".to_vec(), 400, "not an AdmissionReview"),
    ];
    for (name, body, want_status, want_text) in cases {
        let (status, body) = call(&mut sender, body).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, want_status, "{name}: {text}");
        assert!(text.contains(want_text), "{name}: {text}");
    }

    // Over the body limit: 413, and the client may have to reconnect.
    let mut big = sample_review();
    big["request"]["object"]["metadata"]["annotations"] = json!({"padding": "x".repeat(limit + 1)});
    let (status, _) = call(&mut sender, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(status, 413);

    let mut sender = http1_client(addr, &served.ca_pem).await.unwrap();
    // A kind other than Pod, and an operation other than CREATE: allowed, no patch.
    let mut not_pod = sample_review();
    not_pod["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let mut update = sample_review();
    update["request"]["operation"] = json!("UPDATE");
    for review in [not_pod, update] {
        let (status, body) = call(&mut sender, serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    }

    // dryRun gets the same answer as a real run.
    let real = sample_review();
    let mut dry = sample_review();
    dry["request"]["dryRun"] = json!(true);
    let (_, real_body) = call(&mut sender, serde_json::to_vec(&real).unwrap()).await;
    let (_, dry_body) = call(&mut sender, serde_json::to_vec(&dry).unwrap()).await;
    assert_eq!(real_body, dry_body);

    // Still serving, and the errors were counted by reason.
    let (status, _) = call(&mut sender, serde_json::to_vec(&real).unwrap()).await;
    assert_eq!(status, 200);
    let (_, metrics) = http_get(served.webhook.health_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"outcome="error",reason="not_json"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"outcome="skipped",reason="not_a_pod"} 1"#),
        "{metrics}"
    );
    served.webhook.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificate_files_replaced_while_a_connection_is_held() {
    let served = serve_with_files(3 * 1024 * 1024).await;
    let addr = served.webhook.addr;
    let review = serde_json::to_vec(&sample_review()).unwrap();

    let mut held = http1_client(addr, &served.ca_pem).await.unwrap();
    assert_eq!(call(&mut held, review.clone()).await.0, 200);

    // A new CA and certificate, written as kubelet updates a mounted Secret.
    let renewed =
        ingress_tap::certs::generate(&["localhost".into(), "127.0.0.1".into()], "renewed CA")
            .unwrap();
    write_atomically(&served.key, &renewed.key_pem);
    write_atomically(&served.cert, &renewed.cert_pem);

    let new_ca = renewed.ca_pem.clone();
    assert!(
        eventually(DEADLINE, || {
            let ca = new_ca.clone();
            async move { tls_connect(addr, &ca, "localhost", &[]).await.is_ok() }
        })
        .await,
        "new handshakes never saw the new certificate"
    );
    assert!(
        tls_connect(addr, &served.ca_pem, "localhost", &[])
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // The connection opened before the swap still works.
    assert_eq!(call(&mut held, review.clone()).await.0, 200);

    let (_, metrics) = http_get(served.webhook.health_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"ingress_tap_webhook_certificate_reloads_total{result="ok"}"#),
        "{metrics}"
    );
    served.webhook.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_reviews() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let served = serve_with_files(3 * 1024 * 1024).await;
    let addr = served.webhook.addr;
    let review = serde_json::to_vec(&sample_review()).unwrap();

    // A review whose body is still arriving when the stop comes.
    let mut tls = tls_connect(addr, &served.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        review.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&review[..10]).await.unwrap();
    tls.flush().await.unwrap();
    // Let the server read the head before the stop (it is reading the body when stopped).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(served.webhook.shutdown());
    // New connections are refused once the listener is closed.
    assert!(
        eventually(DEADLINE, || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the listener stayed open after the stop"
    );
    tls.write_all(&review[10..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, tls.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A review over a fresh connection, answered within `within`: the webhook still admits.
async fn answered_within(addr: std::net::SocketAddr, ca_pem: &str, within: Duration) -> u16 {
    let review = serde_json::to_vec(&sample_review()).unwrap();
    tokio::time::timeout(within, async {
        let mut sender = http1_client(addr, ca_pem).await.unwrap();
        call(&mut sender, review).await.0
    })
    .await
    .expect("a review was not answered in time")
}

#[tokio::test]
async fn an_expired_or_foreign_certificate_is_refused_on_reload() {
    use time::{Duration as Span, OffsetDateTime};
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let now = OffsetDateTime::now_utc();
    // The pair in use expires in 30 minutes: inside the margin in which /readyz says why.
    let current =
        ingress_tap::certs::generate_with_validity(&names, "test CA", now, now + Span::minutes(30))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    write_atomically(&cert, &current.cert_pem);
    write_atomically(&key, &current.key_pem);
    write_atomically(&ca, &current.ca_pem);
    let webhook = admission::start(WebhookOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        tls_ca: Some(ca),
        ..WebhookOptions::default()
    })
    .await
    .unwrap();
    let (addr, health) = (webhook.addr, webhook.health_addr);
    assert_eq!(http_get(health, "/readyz").await.0, 200);
    let metrics = http_get(health, "/metrics").await.1;
    let expiry = format!(
        "ingress_tap_webhook_certificate_expiry_timestamp_seconds {}",
        current.not_after.unix_timestamp()
    );
    assert!(metrics.contains(&expiry), "{metrics}");

    // A pair that expired in 2020 (its own CA, but expiry is checked first).
    let expired = ingress_tap::certs::generate_with_validity(
        &names,
        "expired CA",
        OffsetDateTime::from_unix_timestamp(1_546_300_800).unwrap(),
        OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap(),
    )
    .unwrap();
    write_atomically(&key, &expired.key_pem);
    write_atomically(&cert, &expired.cert_pem);
    assert!(
        eventually(DEADLINE, || async move {
            let (status, text) = http_get(health, "/readyz").await;
            status == 503 && text.contains("refused") && text.contains("expired at 2020")
        })
        .await,
        "/readyz did not say why: {:?}",
        http_get(health, "/readyz").await
    );
    // The old pair is still served, and reviews are answered.
    tls_connect(addr, &current.ca_pem, "localhost", &[])
        .await
        .expect("the refused pair replaced the one in use");
    assert_eq!(
        answered_within(addr, &current.ca_pem, Duration::from_secs(1)).await,
        200
    );

    // A valid pair from a CA other than ca.crt.
    let foreign = ingress_tap::certs::generate(&names, "foreign CA").unwrap();
    write_atomically(&key, &foreign.key_pem);
    write_atomically(&cert, &foreign.cert_pem);
    assert!(
        eventually(DEADLINE, || async move {
            http_get(health, "/readyz")
                .await
                .1
                .contains("does not chain to the CA")
        })
        .await,
        "the foreign pair was not refused for its chain"
    );
    assert!(tls_connect(addr, &foreign.ca_pem, "localhost", &[])
        .await
        .is_err());
    assert_eq!(
        answered_within(addr, &current.ca_pem, Duration::from_secs(1)).await,
        200
    );
    let metrics = http_get(health, "/metrics").await.1;
    assert!(metrics.contains(&expiry), "{metrics}");
    assert!(
        metrics.contains(r#"ingress_tap_webhook_certificate_reloads_total{result="error"}"#),
        "{metrics}"
    );
    webhook.shutdown().await.unwrap();
}
