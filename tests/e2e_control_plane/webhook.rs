//! The webhook on 127.0.0.1 behind the shipped configuration: what the API server stores, which
//! pods it injects, another webhook after ours, and the webhook stopped.

use super::*;

/// The webhook served in this process, with a certificate for 127.0.0.1 (the API server calls
/// it by URL: there is no Service routing here) and the shipped injection config.
pub(super) struct ServedWebhook {
    webhook: RunningWebhook,
    ca_pem: String,
    _files: tempfile::TempDir,
}

impl ServedWebhook {
    pub(super) async fn start() -> Self {
        let files = tempfile::tempdir().expect("temp dir for the certificate");
        let (webhook, ca_pem) =
            start_webhook(files.path(), "ingress-tap e2e CA", shipped_config_path()).await;
        ServedWebhook {
            webhook,
            ca_pem,
            _files: files,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/mutate", self.webhook.addr)
    }

    async fn reviews(&self) -> ReviewCounts {
        review_counts(self.webhook.health_addr).await
    }
}

pub(super) fn test_pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let map = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "controller".to_owned(),
                // Never pulled: there is no kubelet.
                image: Some("registry.invalid/controller:1".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

pub(super) fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().expect("stored pod has a spec");
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect()
}

pub(super) fn has_sidecar(pod: &Pod, config: &InjectConfig) -> bool {
    all_containers(pod)
        .iter()
        .any(|container| container.name == config.sidecar_name)
}

pub(super) fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|name| !seen.insert(*name))
        .collect()
}

/// The stored pod carries the sidecar, its volumes and mounts exactly once, went through
/// service-account admission and defaulting after injection, and has no duplicate of anything.
pub(super) fn assert_injected_once(pod: &Pod, config: &InjectConfig, target: &str) {
    let name = pod
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "<unnamed>".to_owned());
    let spec = pod.spec.as_ref().expect("stored pod has a spec");
    let containers = all_containers(pod);

    let container_names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        duplicates(container_names.iter().copied()),
        Vec::<&str>::new(),
        "{name}: duplicate containers in {container_names:?}"
    );
    let sidecars: Vec<&&Container> = containers
        .iter()
        .filter(|container| container.name == config.sidecar_name)
        .collect();
    assert_eq!(sidecars.len(), 1, "{name}: containers {container_names:?}");
    let sidecar = sidecars[0];

    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|volume| volume.name.as_str())
        .collect();
    assert_eq!(
        duplicates(volumes.iter().copied()),
        Vec::<&str>::new(),
        "{name}: duplicate volumes in {volumes:?}"
    );
    for volume in [&config.log_volume_name, &config.felix_volume.name] {
        assert!(
            volumes.contains(&volume.as_str()),
            "{name}: volume {volume} missing from {volumes:?}"
        );
    }

    for container in &containers {
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| mount.mount_path.as_str())
            .collect();
        assert_eq!(
            duplicates(mounts.iter().copied()),
            Vec::<&str>::new(),
            "{name}: container {} mounts a path twice: {mounts:?}",
            container.name
        );
        let env: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|var| var.name.as_str())
            .collect();
        assert_eq!(
            duplicates(env.iter().copied()),
            Vec::<&str>::new(),
            "{name}: container {} sets a variable twice: {env:?}",
            container.name
        );
    }
    let mounts_of = |container: &Container, volume: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|mount| mount.name == volume)
            .map(|mount| mount.mount_path.clone())
            .collect::<Vec<_>>()
    };
    let target_container = containers
        .iter()
        .find(|container| container.name == target)
        .unwrap_or_else(|| panic!("{name}: no container {target}"));
    assert_eq!(
        mounts_of(target_container, &config.log_volume_name),
        vec![config.log_dir.clone()],
        "{name}: the log volume is not mounted once into {target}"
    );
    assert_eq!(
        mounts_of(sidecar, &config.log_volume_name),
        vec![config.log_dir.clone()]
    );
    assert_eq!(
        mounts_of(sidecar, &config.felix_volume.name),
        vec![config.felix_volume.mount_path.clone()]
    );

    // Service-account admission ran after the injection: the sidecar got the token too.
    if spec.automount_service_account_token != Some(false) {
        for container in &containers {
            assert!(
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|mount| mount.mount_path == SERVICE_ACCOUNT_MOUNT_PATH),
                "{name}: container {} has no service account token mount",
                container.name
            );
        }
    }
    // Defaulting ran on the injected container too.
    assert_eq!(
        sidecar.termination_message_path.as_deref(),
        Some(DEFAULT_TERMINATION_MESSAGE_PATH),
        "{name}: the API server did not default the sidecar"
    );
    assert!(
        pod.metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(STATUS_ANNOTATION)),
        "{name}: no {STATUS_ANNOTATION} annotation"
    );
}

/// Creates a pod and returns it with the reviews the webhook answered meanwhile. Creation
/// returns after admission, so every review counted belongs to this pod.
pub(super) async fn create_pod(
    client: &Client,
    served: &ServedWebhook,
    namespace: &str,
    pod: &Pod,
) -> (Pod, ReviewCounts) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let before = served.reviews().await;
    let stored = pods
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "create pod {namespace}/{}: {error}",
                pod.metadata.name.as_deref().unwrap_or("?")
            )
        });
    let after = served.reviews().await;
    (stored, after.since(&before))
}

pub(super) async fn shipped_configuration_is_stored_and_used(
    client: &Client,
    base: &[Value],
    served: &ServedWebhook,
) {
    let shipped = base
        .iter()
        .find(|object| object["kind"] == "MutatingWebhookConfiguration")
        .expect("manifests/ ship a MutatingWebhookConfiguration")
        .clone();
    assert_eq!(shipped["metadata"]["name"], WEBHOOK_CONFIGURATION);
    let shipped_webhooks = shipped["webhooks"].as_array().cloned().unwrap_or_default();
    assert!(
        !shipped_webhooks.is_empty(),
        "the configuration has no webhooks"
    );

    // The one change: the webhook's URL on 127.0.0.1 and the test CA, instead of the Service.
    let mut registered = shipped.clone();
    for webhook in registered["webhooks"].as_array_mut().into_iter().flatten() {
        webhook["clientConfig"] = json!({
            "url": served.url(),
            "caBundle": certs::ca_bundle(&served.ca_pem),
        });
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(registered).expect("typed MutatingWebhookConfiguration");
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let created = configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("the API server accepts the shipped configuration");

    let stored = serde_json::to_value(&created).expect("stored configuration as JSON");
    let stored_webhooks = stored["webhooks"].as_array().cloned().unwrap_or_default();
    assert_eq!(stored_webhooks.len(), shipped_webhooks.len());
    for (shipped_webhook, stored_webhook) in shipped_webhooks.iter().zip(&stored_webhooks) {
        for (field, value) in shipped_webhook.as_object().into_iter().flatten() {
            if field == "clientConfig" {
                continue;
            }
            assert_eq!(
                &stored_webhook[field], value,
                "webhook {}: {field} is not as shipped",
                shipped_webhook["name"]
            );
        }
        assert_eq!(stored_webhook["clientConfig"]["url"], json!(served.url()));
        assert!(stored_webhook["clientConfig"].get("service").is_none());
    }

    // In use: the API server's configuration cache picks it up shortly after creation. Dry-run
    // pods go through mutating admission (the webhooks declare sideEffects None) and are not
    // stored.
    let config = shipped_config();
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLAIN_NAMESPACE);
    let probe = test_pod("probe", &[(INJECT_LABEL, INJECT_ENABLED)], &[]);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    wait_for(DEADLINE, "the webhook configuration in use", || async {
        let answered = pods.create(&dry_run, &probe).await.ok()?;
        has_sidecar(&answered, &config).then_some(())
    })
    .await;
}

pub(super) struct ControllerCase {
    deployment: Value,
    service_account: &'static str,
    target: &'static str,
}

pub(super) fn controller_cases() -> Vec<ControllerCase> {
    let read = |relative: &str| {
        let text = std::fs::read_to_string(fixture(relative)).expect("read fixture");
        yaml_documents(&text).remove(0)
    };
    vec![
        ControllerCase {
            deployment: read("ingress-controllers/ingress-nginx-controller-deployment.yaml"),
            service_account: "ingress-nginx",
            target: "controller",
        },
        ControllerCase {
            deployment: read("ingress-controllers/nginx-inc-deployment.yaml"),
            service_account: "nginx-ingress",
            target: "nginx-ingress",
        },
    ]
}

pub(super) async fn controller_deployments_are_injected(client: &Client, served: &ServedWebhook) {
    let config = shipped_config();
    let cases = controller_cases();
    let before = served.reviews().await;
    for case in &cases {
        let namespace = case.deployment["metadata"]["namespace"]
            .as_str()
            .expect("fixture namespace");
        create_service_account(client, namespace, case.service_account).await;
        // Opted in by pod label; one replica is enough to see what the API server stores.
        let mut deployment = case.deployment.clone();
        deployment["spec"]["replicas"] = json!(1);
        deployment["spec"]["template"]["metadata"]["labels"][INJECT_LABEL] = json!(INJECT_ENABLED);
        let typed: Deployment = serde_json::from_value(deployment).expect("typed Deployment");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        deployments
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|error| panic!("create {}: {error}", describe(&case.deployment)));
    }

    for case in &cases {
        let namespace = case.deployment["metadata"]["namespace"]
            .as_str()
            .expect("fixture namespace");
        let selector = case.deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&selector);
        let pod = wait_for(
            DEADLINE,
            &format!(
                "a pod of {} (see kube-controller-manager.log)",
                describe(&case.deployment)
            ),
            || async { pods.list(&params).await.ok()?.items.into_iter().next() },
        )
        .await;
        let owners: Vec<&str> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|owner| owner.kind.as_str())
            .collect();
        assert_eq!(owners, ["ReplicaSet"], "{}", describe(&case.deployment));
        assert_injected_once(&pod, &config, case.target);
        assert_eq!(
            pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            None,
            "no scheduler runs here"
        );
    }
    let reviews = served.reviews().await.since(&before);
    eprintln!("e2e: reviews for the controllers' pods: {:?}", reviews.0);
    assert_eq!(
        reviews.get("injected", ""),
        cases.len() as u64,
        "one injection per pod: {reviews:?}"
    );
    assert_eq!(
        reviews.total() - reviews.get("injected", "") - reviews.get("skipped", "already_injected"),
        0,
        "only injections and reinvocations: {reviews:?}"
    );
}

pub(super) async fn selection_by_namespace_and_pod(client: &Client, served: &ServedWebhook) {
    let config = shipped_config();

    // Labelled namespace: an unlabelled pod is injected, once.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("unlabelled", &[], &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");

    // A pod labelled enabled there: both webhook entries could match, only one may.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("enabled", &[(INJECT_LABEL, INJECT_ENABLED)], &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");

    // A pod labelled disabled is not injected, and never reaches the webhook.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("disabled", &[(INJECT_LABEL, INJECT_DISABLED)], &[]),
    )
    .await;
    assert!(!has_sidecar(&pod, &config));
    assert_eq!(reviews.total(), 0, "{reviews:?}");

    // Elsewhere: an unlabelled pod in an unlabelled namespace never reaches the webhook.
    let (pod, reviews) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod("plain", &[], &[]),
    )
    .await;
    assert!(!has_sidecar(&pod, &config));
    assert_eq!(reviews.total(), 0, "{reviews:?}");

    // kube-system and the webhook's own namespace are excluded, even for pods labelled
    // enabled, and even when the namespace itself is labelled for injection.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in ["kube-system", WEBHOOK_NAMESPACE] {
        namespaces
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_ENABLED}}})),
            )
            .await
            .expect("label the namespace for injection");
        for (name, labels) in [
            ("excluded-enabled", vec![(INJECT_LABEL, INJECT_ENABLED)]),
            ("excluded-unlabelled", vec![]),
        ] {
            let (pod, reviews) =
                create_pod(client, served, namespace, &test_pod(name, &labels, &[])).await;
            assert!(!has_sidecar(&pod, &config), "{namespace}/{name} injected");
            assert_eq!(reviews.total(), 0, "{namespace}/{name}: {reviews:?}");
        }
    }
    // Back to the shipped labels: kube-system had none, the webhook's namespace opts out.
    namespaces
        .patch(
            "kube-system",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: null}}})),
        )
        .await
        .expect("remove the label again");
    namespaces
        .patch(
            WEBHOOK_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_DISABLED}}})),
        )
        .await
        .expect("restore the shipped label");

    // Native sidecar requested per pod: this 1.20 server stores the init container without
    // restartPolicy, i.e. as an init container that would never finish. Needs 1.29.
    let (pod, _) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod(
            "native",
            &[(INJECT_LABEL, INJECT_ENABLED)],
            &[(NATIVE_SIDECAR_ANNOTATION, "true")],
        ),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    let init_sidecar = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.init_containers.as_ref())
        .and_then(|init| init.iter().find(|c| c.name == config.sidecar_name))
        .expect("native mode injects an init container");
    assert_eq!(
        init_sidecar.restart_policy, None,
        "a 1.20 server cannot keep restartPolicy: Always"
    );
}

pub(super) async fn another_webhook_adds_a_container_after_ours(
    client: &Client,
    served: &ServedWebhook,
) {
    let config = shipped_config();
    let extra = ExtraContainerWebhook::start().await;
    let text = std::fs::read_to_string(fixture("e2e/extra-container-webhook.yaml"))
        .expect("read the extra webhook's configuration");
    let mut registered = yaml_documents(&text).remove(0);
    let extra_name = registered["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert!(
        extra_name.as_str() > WEBHOOK_CONFIGURATION,
        "the API server calls webhooks in configuration name order; {extra_name} must sort \
         after {WEBHOOK_CONFIGURATION}"
    );
    for webhook in registered["webhooks"].as_array_mut().into_iter().flatten() {
        webhook["clientConfig"] = json!({
            "url": format!("https://{}/mutate", extra.addr),
            "caBundle": certs::ca_bundle(&extra.ca_pem),
        });
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(registered).expect("typed configuration");
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("register the extra webhook");

    let labels = [
        (INJECT_LABEL, INJECT_ENABLED),
        (EXTRA_CONTAINER_LABEL, "yes"),
    ];
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLAIN_NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let probe = test_pod("extra-probe", &labels, &[]);
    wait_for(DEADLINE, "the extra webhook in use", || async {
        let answered = pods.create(&dry_run, &probe).await.ok()?;
        all_containers(&answered)
            .iter()
            .any(|container| container.name == ExtraContainerWebhook::CONTAINER)
            .then_some(())
    })
    .await;

    let calls_before = extra.calls();
    let (pod, reviews) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod("with-extra", &labels, &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    let names: Vec<&str> = all_containers(&pod)
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "controller",
            config.sidecar_name.as_str(),
            ExtraContainerWebhook::CONTAINER
        ],
        "ours first, then the extra webhook's container, each once"
    );
    assert!(
        extra.calls() > calls_before,
        "the extra webhook was not called"
    );
    eprintln!(
        "e2e: reviews for the pod with the extra container: ours {:?}, extra webhook {}",
        reviews.0,
        extra.calls() - calls_before
    );
    // Ours ran, then was reinvoked after the extra webhook changed the pod, and added nothing.
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");
    assert!(
        reviews.get("skipped", "already_injected") >= 1 && reviews.total() >= 2,
        "our webhook was not reinvoked: {reviews:?}"
    );

    configurations
        .delete(&extra_name, &DeleteParams::default())
        .await
        .expect("remove the extra webhook");
}

pub(super) async fn webhook_stopped_refuses_only_selected_pods(
    client: &Client,
    served: ServedWebhook,
) {
    served
        .webhook
        .shutdown()
        .await
        .expect("the webhook stops cleanly");

    // Selected pods: failurePolicy Fail, and the message names the webhook entry.
    for (namespace, name, labels, entry) in [
        (
            PLAIN_NAMESPACE,
            "refused-by-label",
            vec![(INJECT_LABEL, INJECT_ENABLED)],
            "by-pod-label.ingress-tap.io",
        ),
        (
            LABELLED_NAMESPACE,
            "refused-by-namespace",
            vec![],
            "by-namespace-label.ingress-tap.io",
        ),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let error = pods
            .create(&PostParams::default(), &test_pod(name, &labels, &[]))
            .await
            .expect_err("a selected pod must be refused while the webhook is down");
        let message = match &error {
            kube::Error::Api(status) => status.message.clone(),
            other => panic!("{namespace}/{name}: not an API error: {other}"),
        };
        assert!(
            message.contains("ingress-tap") && message.contains(entry),
            "{namespace}/{name}: the refusal must name the webhook: {message}"
        );
    }

    // Pods the webhook does not select are created: the API server does not call it.
    for (namespace, name, labels) in [
        (PLAIN_NAMESPACE, "unselected", vec![]),
        (
            LABELLED_NAMESPACE,
            "opted-out",
            vec![(INJECT_LABEL, INJECT_DISABLED)],
        ),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        pods.create(&PostParams::default(), &test_pod(name, &labels, &[]))
            .await
            .unwrap_or_else(|error| {
                panic!("{namespace}/{name} must be created without the webhook: {error}")
            });
    }
}
