//! ingress-tap end to end on a real Kubernetes API server (the loopback control plane of
//! tests/control-plane/: etcd, kube-apiserver and kube-controller-manager 1.20.2, no scheduler,
//! no kubelet). What runs here and what only a real cluster adds is in docs/e2e.md.
//!
//! One control plane serves the whole file, so the scenarios run in sequence inside one test,
//! each reporting its time on stderr:
//! - the shipped manifests and `ingress-tap inject` output pass the server's dry run, except
//!   the two kinds a 1.20 server does not serve, which are named; fields newer than 1.20 are
//!   dropped by the server; native sidecars are shown to need a newer server and are kept under
//!   schema validation;
//! - the shipped MutatingWebhookConfiguration, pointed at the webhook on 127.0.0.1, is what the
//!   API server stores and uses;
//! - the controllers' own Deployments, opted in by pod label, become injected pods through the
//!   ReplicaSet controller, the webhook, service-account admission and defaulting;
//! - namespace and pod selection, including the namespaces that must never be injected;
//! - another mutating webhook adding a container after ours;
//! - the webhook stopped: failurePolicy Fail for selected pods only;
//! - `ingress-tap certs install` against the API server.

mod certs_install;
#[path = "../control_plane_harness/mod.rs"]
mod control_plane_harness;
mod dry_run;
mod namespaces;
mod webhook;

use certs_install::*;
use dry_run::*;
use namespaces::*;
use webhook::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control_plane_harness::{
    certs_job_args, describe, render, repository, review_counts, start_webhook, tail, wait_for,
    write_yaml_stream, yaml_documents, ControlPlane, ExtraContainerWebhook, ReviewCounts, Step,
};
use ingress_tap::admission::RunningWebhook;
use ingress_tap::certs::{self, CA_FILE, CERT_FILE, KEY_FILE};
use ingress_tap_core::inject::{
    InjectConfig, INJECT_DISABLED, INJECT_ENABLED, INJECT_LABEL, NATIVE_SIDECAR_ANNOTATION,
    STATUS_ANNOTATION,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Controllers and admission configuration caches act through informers and retries; this is
/// ample on a busy two-core machine and still fails a broken setup in reasonable time.
const DEADLINE: Duration = Duration::from_secs(60);
/// The path where service-account admission mounts the token.
const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// What the API server sets on a container that does not say (its defaulting).
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The webhook's own namespace, as shipped.
const WEBHOOK_NAMESPACE: &str = "ingress-tap";
/// The shipped MutatingWebhookConfiguration's name.
const WEBHOOK_CONFIGURATION: &str = "ingress-tap";
/// A namespace labelled for injection, and one that is not.
const LABELLED_NAMESPACE: &str = "tap-enabled";
const PLAIN_NAMESPACE: &str = "tap-elsewhere";
/// Label the extra webhook of tests/fixtures/e2e/extra-container-webhook.yaml selects.
const EXTRA_CONTAINER_LABEL: &str = "e2e.ingress-tap.io/extra-container";

/// Fields this API server (1.20) does not know, where they sit, and the release that brought
/// them: a 1.20 server drops them from what it stores, as every server drops unknown fields.
const NEWER_THAN_1_20: [(&str, &str); 5] = [
    ("matchLabelKeys", "topology spread constraints, 1.25"),
    ("timeZone", "CronJob, 1.25"),
    ("unhealthyPodEvictionPolicy", "PodDisruptionBudget, 1.26"),
    (
        "restartPolicy",
        "containers: native sidecars, 1.28 (on by default 1.29)",
    ),
    ("terminationGracePeriodSeconds", "probes, 1.21"),
];

fn shipped_config() -> InjectConfig {
    let text = std::fs::read_to_string(shipped_config_path()).expect("read the shipped config");
    InjectConfig::from_yaml(&text).expect("the shipped injection config is valid")
}

fn shipped_config_path() -> PathBuf {
    repository().join("manifests/base/inject-config.yaml")
}

fn fixture(relative: &str) -> PathBuf {
    repository().join("tests/fixtures").join(relative)
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ingress-tap")
}

/// Starts timing one scenario of this file.
fn step(name: &'static str) -> Step {
    Step::start("e2e", name)
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tap_on_a_real_control_plane() {
    let started = Instant::now();
    let control_plane = {
        let _step = step("control plane up");
        ControlPlane::start()
    };
    let client = control_plane.client().await;
    let base = render("manifests");

    {
        let _step = step("namespaces");
        create_namespaces(&control_plane, &client, &base).await;
    }
    {
        let _step = step("manifests: server-side dry run");
        manifests_pass_server_dry_run(&control_plane, &base);
    }
    {
        let _step = step("inject output: server-side dry run");
        inject_output_passes_server_dry_run(&control_plane);
    }
    {
        let _step = step("native sidecar mode");
        native_sidecars_need_a_newer_server(&control_plane);
        openshift_router_needs_a_newer_server(&control_plane);
    }

    let served = ServedWebhook::start().await;
    {
        let _step = step("shipped webhook configuration");
        shipped_configuration_is_stored_and_used(&client, &base, &served).await;
    }
    {
        let _step = step("controllers' Deployments");
        controller_deployments_are_injected(&client, &served).await;
    }
    {
        let _step = step("namespace and pod selection");
        selection_by_namespace_and_pod(&client, &served).await;
    }
    {
        let _step = step("another webhook after ours");
        another_webhook_adds_a_container_after_ours(&client, &served).await;
    }
    {
        let _step = step("webhook stopped");
        webhook_stopped_refuses_only_selected_pods(&client, served).await;
    }
    {
        let _step = step("certs install");
        certs_install_against_the_api_server(&control_plane, &client, &base).await;
    }
    eprintln!(
        "e2e: all scenarios done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
