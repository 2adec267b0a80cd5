//! The webhook's work per request without sockets: one AdmissionReview body in, the answer
//! out (parse → decide → patch → serialise), as `admission::handler::review` does it for every
//! pod the API server creates.
//!
//! Target: under 50 µs for the ingress-nginx controller pod. Next to it, parsing the same body
//! into a `serde_json::Value` and nothing else, so the share of the JSON parse is read from the
//! same run, and validating it without building anything: the floor of any review that checks
//! the whole body with serde_json.
//!
//! The wide pods (1 to 200 containers × 50 env vars) are reported per container
//! (`Throughput::Elements`): the engine claims linear cost, so the time per container must
//! stay flat from the small pod to the huge one, next to the same figure for the JSON parse
//! of the same bodies.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingress_tap::admission::handler::{review, Outcome};
use ingress_tap_core::inject::InjectConfig;
use serde::de::IgnoredAny;
use serde_json::Value;

#[path = "support/admission_review.rs"]
mod admission_review;

const ENV_PER_CONTAINER: usize = 50;
const CONTAINER_COUNTS: [usize; 4] = [1, 10, 50, 200];

/// Checks, before timing anything, that `body` is answered with an injection whose patch adds
/// exactly the sidecar container: a benchmark of a skip or a denial would measure the wrong
/// path.
fn assert_injects(body: &[u8], config: &InjectConfig) {
    let answer = review(body, config).expect("the benchmark review is well formed");
    assert_eq!(
        answer.outcome,
        Outcome::Injected,
        "the review was not injected"
    );
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(response["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let request: Value = serde_json::from_slice(body).unwrap();
    let mut pod = request["request"]["object"].clone();
    let containers_before = pod["spec"]["containers"].as_array().unwrap().len();
    json_patch::patch(&mut pod, &patch).unwrap();
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), containers_before + 1);
    assert!(containers
        .iter()
        .any(|container| container["name"] == config.sidecar_name.as_str()));
}

fn admission(c: &mut Criterion) {
    let config = InjectConfig::default();

    let controller = admission_review::controller_review().unwrap();
    assert_injects(&controller, &config);
    let answer_bytes = review(&controller, &config).unwrap().body.len();
    eprintln!(
        "ingress-nginx controller review: {} bytes in, {answer_bytes} bytes out",
        controller.len()
    );

    let mut group = c.benchmark_group("admission_review");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ingress_nginx_controller", |b| {
        b.iter(|| review(black_box(&controller), &config))
    });
    group.bench_function("json_parse_only_baseline", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&controller)))
    });
    // The floor of any review that validates the whole body with serde_json: checked, nothing
    // built. What the review costs above it is reading, deciding and answering.
    group.bench_function("json_validate_only_floor", |b| {
        b.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(&controller)))
    });
    group.finish();

    let mut group = c.benchmark_group("admission_review_per_container");
    // The 200-container body is about 0.5 MB: fewer, longer samples keep the run short.
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    for containers in CONTAINER_COUNTS {
        let body = admission_review::wide_pod_review(containers, ENV_PER_CONTAINER).unwrap();
        assert_injects(&body, &config);
        eprintln!(
            "{containers} containers × {ENV_PER_CONTAINER} env vars: {} bytes",
            body.len()
        );
        group.throughput(Throughput::Elements(containers as u64));
        group.bench_with_input(
            BenchmarkId::new("containers_x50_env", containers),
            &body,
            |b, body| b.iter(|| review(black_box(body), &config)),
        );
        // The JSON parse alone grows with the body as well: where the review's time per
        // container rises with size, this shows how much of the rise is the parse (memory
        // traffic) and how much is the engine.
        group.bench_with_input(
            BenchmarkId::new("json_parse_only_baseline", containers),
            &body,
            |b, body| b.iter(|| serde_json::from_slice::<Value>(black_box(body))),
        );
    }
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
