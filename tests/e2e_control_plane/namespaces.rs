//! The namespaces every scenario uses, with their service accounts ready.

use super::*;

pub(super) async fn create_namespaces(
    control_plane: &ControlPlane,
    client: &Client,
    base: &[Value],
) {
    // The webhook's namespace is the shipped object, applied for real: certs install and the
    // namespace exclusions need it. namespace.sh then adds the name label newer servers set.
    let shipped_namespace = base
        .iter()
        .find(|object| object["kind"] == "Namespace")
        .expect("manifests/ ship a Namespace");
    assert_eq!(shipped_namespace["metadata"]["name"], WEBHOOK_NAMESPACE);
    let file = control_plane.scratch("namespace.yaml");
    write_yaml_stream(&file, std::slice::from_ref(shipped_namespace));
    let applied = control_plane.kubectl(&["apply", "-f", path_str(&file)]);
    assert_success(&applied, "kubectl apply of the shipped Namespace");
    control_plane.create_namespace(WEBHOOK_NAMESPACE);

    for namespace in [
        LABELLED_NAMESPACE,
        PLAIN_NAMESPACE,
        "ingress-nginx",
        "nginx-ingress",
        "openshift-ingress",
    ] {
        control_plane.create_namespace(namespace);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            LABELLED_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_ENABLED}}})),
        )
        .await
        .expect("label the namespace for injection");

    // Service-account admission refuses pods until the service account has its token.
    for namespace in [
        LABELLED_NAMESPACE,
        PLAIN_NAMESPACE,
        WEBHOOK_NAMESPACE,
        "kube-system",
    ] {
        wait_for_token(client, namespace, "default").await;
    }
}

pub(super) async fn wait_for_token(client: &Client, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    wait_for(
        DEADLINE,
        &format!("a token for service account {namespace}/{name}"),
        || async {
            let account = accounts.get_opt(name).await.ok().flatten()?;
            account
                .secrets
                .filter(|secrets| !secrets.is_empty())
                .map(|_| ())
        },
    )
    .await;
}

pub(super) async fn create_service_account(client: &Client, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap_or_else(|error| panic!("create service account {namespace}/{name}: {error}"));
    wait_for_token(client, namespace, name).await;
}
