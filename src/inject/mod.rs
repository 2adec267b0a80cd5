//! Pure sidecar injection: a Pod and the injection config in, a decision and a JSON patch out.
