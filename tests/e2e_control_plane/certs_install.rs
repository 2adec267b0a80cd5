//! `ingress-tap certs install` against the API server: a Secret created, kept, renewed near expiry.

use super::*;

/// Runs `ingress-tap certs install` with the shipped Job's arguments against this server.
pub(super) fn certs_install(control_plane: &ControlPlane, job_args: &[String]) -> String {
    let output = Command::new(binary())
        .args(job_args)
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig())
        .output()
        .expect("run ingress-tap certs install");
    assert_success(&output, "ingress-tap certs install");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(super) fn secret_data<'s>(secret: &'s Secret, key: &str) -> &'s [u8] {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.as_slice())
        .unwrap_or_else(|| panic!("the Secret has no {key}"))
}

pub(super) fn ca_bundles(configuration: &MutatingWebhookConfiguration) -> Vec<Vec<u8>> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .map(|webhook| {
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|bundle| bundle.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

pub(super) fn not_after(cert_pem: &[u8]) -> time::OffsetDateTime {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem).expect("PEM certificate");
    let cert = pem.parse_x509().expect("X.509 certificate");
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .expect("valid timestamp")
}

/// A CA and a serving certificate for the Service that expire in ten days.
pub(super) fn expiring_chain(names: &[String]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(10);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|name| SanType::DnsName(name.as_str().try_into().expect("DNS name")))
        .collect();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(10);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

pub(super) async fn certs_install_against_the_api_server(
    control_plane: &ControlPlane,
    client: &Client,
    base: &[Value],
) {
    let job_args = certs_job_args(base);
    let option = |flag: &str| {
        job_args
            .iter()
            .position(|arg| arg == flag)
            .and_then(|index| job_args.get(index + 1))
            .cloned()
            .unwrap_or_else(|| panic!("the Job passes no {flag}"))
    };
    let (namespace, service, secret_name) = (
        option("--namespace"),
        option("--service"),
        option("--secret"),
    );
    assert_eq!(option("--webhook-config"), WEBHOOK_CONFIGURATION);
    let names = certs::service_names(&service, &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());

    // First run: creates the Secret and writes its CA into every webhook's caBundle.
    let said = certs_install(control_plane, &job_args);
    assert!(
        said.contains("created") && said.contains("caBundle patched"),
        "{said}"
    );
    let secret = secrets.get(&secret_name).await.expect("the Secret exists");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = secret_data(&secret, CA_FILE).to_vec();
    ingress_tap::certs::install::plan::chain_serves(
        &ca,
        secret_data(&secret, CERT_FILE),
        &names,
        time::OffsetDateTime::now_utc(),
    )
    .expect("the stored certificate serves the Service's names under ca.crt");
    let configuration = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert!(ca_bundles(&configuration)
        .iter()
        .all(|bundle| *bundle == ca));

    // Second run: nothing to do, nothing written.
    let said = certs_install(control_plane, &job_args);
    assert_eq!(said.matches("unchanged").count(), 2, "{said}");
    let again = secrets.get(&secret_name).await.expect("the Secret");
    let configuration_again = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert_eq!(
        again.metadata.resource_version,
        secret.metadata.resource_version
    );
    assert_eq!(
        configuration_again.metadata.resource_version,
        configuration.metadata.resource_version
    );

    // An expiring certificate is renewed, and the caBundle follows.
    let (old_ca, old_cert, old_key) = expiring_chain(&names);
    let mut expiring = again.clone();
    expiring.data = Some(BTreeMap::from([
        (CA_FILE.to_owned(), ByteString(old_ca.clone().into_bytes())),
        (CERT_FILE.to_owned(), ByteString(old_cert.into_bytes())),
        (KEY_FILE.to_owned(), ByteString(old_key.into_bytes())),
    ]));
    let expiring = secrets
        .replace(&secret_name, &PostParams::default(), &expiring)
        .await
        .expect("store the expiring certificate");
    let said = certs_install(control_plane, &job_args);
    assert!(
        said.contains("renewed") && said.contains("caBundle patched"),
        "{said}"
    );
    let renewed = secrets.get(&secret_name).await.expect("the Secret");
    assert_ne!(
        renewed.metadata.resource_version,
        expiring.metadata.resource_version
    );
    let renewed_ca = secret_data(&renewed, CA_FILE).to_vec();
    let now = time::OffsetDateTime::now_utc();
    assert!(not_after(secret_data(&renewed, CERT_FILE)) > now + time::Duration::days(300));
    ingress_tap::certs::install::plan::chain_serves(
        &renewed_ca,
        secret_data(&renewed, CERT_FILE),
        &names,
        now,
    )
    .expect("the renewed certificate serves the Service's names");
    assert!(
        String::from_utf8_lossy(&renewed_ca).contains(old_ca.trim()),
        "the previous CA stays trusted while the old certificate may still be served"
    );
    let configuration = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert!(ca_bundles(&configuration)
        .iter()
        .all(|bundle| *bundle == renewed_ca));
}
