//! The webhook's metric families.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a review: the outcome and, for skips and denials, the reason code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// Every metric the webhook exports.
pub struct WebhookMetrics {
    /// Reviews answered, by outcome (injected, skipped, denied, error) and reason.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time from a complete request body to the serialised answer.
    pub review_seconds: Histogram,
    /// Injection config reloads by result (ok, error).
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Serving certificate reloads by result (ok, error).
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    /// 1 while the loaded config is the file's latest content, 0 while a bad file is ignored.
    pub config_valid: Gauge,
    /// notAfter of the serving certificate in use, in seconds since the Unix epoch.
    pub certificate_expiry: Gauge,
    /// Bytes of request bodies that may be held at once.
    pub body_budget_bytes: Gauge,
    /// Bytes of request bodies held now.
    pub inflight_body_bytes: Gauge,
    /// Requests answered without a review, by reason (too_large, busy, timeout, broken).
    pub requests_refused: Family<ReasonLabels, Counter>,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

impl WebhookMetrics {
    /// Creates the families and registers them under `ingress_tap_webhook_`.
    pub fn register(registry: &mut Registry) -> Self {
        // Reviews take microseconds; the API server times out at seconds.
        let buckets = [
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
        ];
        let metrics = Self {
            reviews: Family::default(),
            review_seconds: Histogram::new(buckets),
            config_reloads: Family::default(),
            certificate_reloads: Family::default(),
            config_valid: Gauge::default(),
            certificate_expiry: Gauge::default(),
            body_budget_bytes: Gauge::default(),
            inflight_body_bytes: Gauge::default(),
            requests_refused: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("ingress_tap_webhook");
        registry.register(
            "reviews",
            "AdmissionReviews answered, by outcome and reason",
            metrics.reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to decide and serialise one review",
            metrics.review_seconds.clone(),
        );
        registry.register(
            "config_reloads",
            "Injection config reloads by result",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result",
            metrics.certificate_reloads.clone(),
        );
        registry.register(
            "config_valid",
            "1 when the config file in use is the file's latest content",
            metrics.config_valid.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, in seconds since the Unix epoch",
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "body_budget_bytes",
            "Bytes of request bodies that may be held at once",
            metrics.body_budget_bytes.clone(),
        );
        registry.register(
            "inflight_body_bytes",
            "Bytes of request bodies held now",
            metrics.inflight_body_bytes.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests answered without a review, by reason (too_large, busy, timeout, broken)",
            metrics.requests_refused.clone(),
        );
        metrics
    }

    /// Counts one review.
    pub fn count(&self, outcome: &'static str, reason: &'static str) {
        self.reviews
            .get_or_create(&ReviewLabels { outcome, reason })
            .inc();
    }
}
