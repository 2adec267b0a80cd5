//! The webhook under hostile or changing conditions: arbitrary bodies never panic the
//! handler, a config file change is picked up (and a bad one is refused without losing the
//! good one), and slow or idle clients do not stop others from being served.

mod common;

use common::*;
use ingress_tap::admission::{self, handler, WebhookOptions};
use ingress_tap::inject::InjectConfig;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const DEADLINE: Duration = Duration::from_secs(20);

fn sample_review() -> Value {
    serde_json::from_str(admission::dev::SAMPLE_REVIEW).unwrap()
}

/// Any JSON value, nested a few levels.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9/~._ -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("containers".to_owned()),
                    Just("name".to_owned()),
                    Just("volumes".to_owned()),
                    Just("annotations".to_owned()),
                    Just("labels".to_owned()),
                    "[a-z/~]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = handler::review(&body, &InjectConfig::default());
    }

    #[test]
    fn arbitrary_envelopes_and_objects_never_panic(object in arbitrary_json(), field in arbitrary_json()) {
        let config = InjectConfig::default();
        // A real envelope around an arbitrary object: the answer is well formed, and any patch
        // applies to the object as sent.
        let mut review = sample_review();
        review["request"]["object"] = object.clone();
        if let Ok(answer) = handler::review(&serde_json::to_vec(&review).unwrap(), &config) {
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            prop_assert_eq!(&body["response"]["uid"], &review["request"]["uid"]);
            if let Some(patch) = body["response"]["patch"].as_str() {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                let mut mutated = object.clone();
                prop_assert!(json_patch::patch(&mut mutated, &patch).is_ok());
            }
        }
        // An arbitrary value in place of each envelope field.
        for key in ["request", "kind", "apiVersion"] {
            let mut broken = sample_review();
            broken[key] = field.clone();
            let _ = handler::review(&serde_json::to_vec(&broken).unwrap(), &config);
        }
        for key in ["uid", "kind", "operation", "namespace", "dryRun", "subResource"] {
            let mut broken = sample_review();
            broken["request"][key] = field.clone();
            let _ = handler::review(&serde_json::to_vec(&broken).unwrap(), &config);
        }
    }
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Served {
    webhook: admission::RunningWebhook,
    ca_pem: String,
    dir: tempfile::TempDir,
}

async fn serve(
    config: Option<&str>,
    client_timeout_seconds: u64,
    max_connections: usize,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let certs =
        ingress_tap::certs::generate(&["localhost".into(), "127.0.0.1".into()], "test CA").unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    write_atomically(&cert, &certs.cert_pem);
    write_atomically(&key, &certs.key_pem);
    let config_path = config.map(|text| {
        let path = dir.path().join("config.yaml");
        write_atomically(&path, text);
        path
    });
    let webhook = admission::start(WebhookOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        config: config_path,
        dev_dir: None,
        max_body_bytes: 3 * 1024 * 1024,
        max_connections,
        client_timeout_seconds,
        ..WebhookOptions::default()
    })
    .await
    .unwrap();
    Served {
        webhook,
        ca_pem: certs.ca_pem,
        dir,
    }
}

/// The sidecar image in the webhook's answer to the sample review.
async fn injected_image(served: &Served) -> String {
    let mut sender = http1_client(served.webhook.addr, &served.ca_pem)
        .await
        .unwrap();
    let response = sender
        .send_request(post(
            "/mutate",
            serde_json::to_vec(&sample_review()).unwrap(),
        ))
        .await
        .unwrap();
    let (status, body) = body_of(response).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let mut pod = sample_review()["request"]["object"].clone();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ingress-collector")
        .map(|c| c["image"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn config_reload_applies_good_files_and_keeps_the_last_good_one() {
    let served = serve(Some("image: registry.example/collector:1\n"), 10, 64).await;
    assert_eq!(
        injected_image(&served).await,
        "registry.example/collector:1"
    );

    let path = served.dir.path().join("config.yaml");
    write_atomically(&path, "image: registry.example/collector:2\n");
    assert!(
        eventually(DEADLINE, || async {
            injected_image(&served).await == "registry.example/collector:2"
        })
        .await,
        "the new config was never used"
    );

    // A bad file: rejected, reported, and the previous config stays in force.
    write_atomically(
        &path,
        "image: registry.example/collector:3\nnoSuchKey: true\n",
    );
    let health = served.webhook.health_addr;
    assert!(
        eventually(DEADLINE, || async move {
            http_get(health, "/metrics")
                .await
                .1
                .contains("ingress_tap_webhook_config_valid 0")
        })
        .await,
        "the bad config was not reported"
    );
    let metrics = http_get(health, "/metrics").await.1;
    assert!(
        metrics.contains(r#"ingress_tap_webhook_config_reloads_total{result="error"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        injected_image(&served).await,
        "registry.example/collector:2"
    );

    // Fixed again: valid once more.
    write_atomically(&path, "image: registry.example/collector:4\n");
    assert!(
        eventually(DEADLINE, || async {
            injected_image(&served).await == "registry.example/collector:4"
        })
        .await
    );
    assert!(http_get(health, "/metrics")
        .await
        .1
        .contains("ingress_tap_webhook_config_valid 1"));
    served.webhook.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_invalid_config_file_stops_startup_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "intervalSeconds: 0\n").unwrap();
    let err = admission::start(WebhookOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: None,
        tls_key: None,
        config: Some(path),
        dev_dir: None,
        max_body_bytes: 1024,
        max_connections: 4,
        client_timeout_seconds: 10,
        ..WebhookOptions::default()
    })
    .await
    .err()
    .expect("startup must fail");
    let text = format!("{err:#}");
    assert!(text.contains("invalid injection config"), "{text}");
    assert!(text.contains("intervalSeconds"), "{text}");
}

#[tokio::test]
async fn slow_and_idle_clients_do_not_stop_others() {
    let served = serve(None, 1, 32).await;
    let addr = served.webhook.addr;

    // Idle connections that never start TLS, and one that sends headers a byte at a time.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = tls_connect(addr, &served.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let slow_writer = tokio::spawn(async move {
        let head = b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}";
        for byte in head {
            if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
                return true; // the server closed the connection
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    });

    // Others are served meanwhile.
    for _ in 0..5 {
        let mut sender = http1_client(addr, &served.ca_pem).await.unwrap();
        let response = sender
            .send_request(post(
                "/mutate",
                serde_json::to_vec(&sample_review()).unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(body_of(response).await.0, 200);
    }
    // The slow client is cut off by the header timeout, long before it finishes.
    assert!(
        tokio::time::timeout(DEADLINE, slow_writer)
            .await
            .unwrap()
            .unwrap(),
        "the slow client was allowed to finish its headers"
    );
    drop(idle);
    served.webhook.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_the_webhook_recovers() {
    let served = serve(None, 1, 4).await;
    let addr = served.webhook.addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(http1_client(addr, &served.ca_pem).await.unwrap());
    }
    // A fifth connection is closed at accept: its handshake fails.
    assert!(tls_connect(addr, &served.ca_pem, "localhost", &[])
        .await
        .is_err());
    drop(held);
    // Slots are freed when connections close.
    assert!(
        eventually(DEADLINE, || async {
            match http1_client(addr, &served.ca_pem).await {
                Ok(mut sender) => match sender
                    .send_request(post(
                        "/mutate",
                        serde_json::to_vec(&sample_review()).unwrap(),
                    ))
                    .await
                {
                    Ok(response) => body_of(response).await.0 == 200,
                    Err(_) => false,
                },
                Err(_) => false,
            }
        })
        .await
    );
    served.webhook.shutdown().await.unwrap();
}
