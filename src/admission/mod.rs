//! The admission webhook: AdmissionReview v1 over HTTPS, answered by the injection engine.
