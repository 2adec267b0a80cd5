use super::*;

fn invalid_key(result: Result<InjectConfig, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn empty_document_is_the_default() {
    assert_eq!(
        InjectConfig::from_yaml("").unwrap(),
        InjectConfig::default()
    );
    assert_eq!(
        InjectConfig::from_yaml("# only a comment\n").unwrap(),
        InjectConfig::default()
    );
    InjectConfig::default().validate().unwrap();
}

#[test]
fn partial_documents_keep_other_defaults() {
    let config =
        InjectConfig::from_yaml("felixVolume:\n  kind: hostPath\nlogLevel: debug\n").unwrap();
    assert_eq!(config.felix_volume.kind, FelixVolumeKind::HostPath);
    assert_eq!(config.felix_volume.mount_path, "/var/run/felix");
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.sidecar_name, "ingress-collector");
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    for text in [
        "sidecarname: x\n",
        "felixVolume:\n  driver: x\n",
        "resources:\n  request: {}\n",
        "extraEnv:\n- name: A\n  value: b\n  valueFrom: c\n",
    ] {
        let error = InjectConfig::from_yaml(text).unwrap_err();
        assert!(matches!(error, ConfigError::Parse(_)), "{text:?}: {error}");
        assert!(error.to_string().contains("unknown field"), "{error}");
    }
}

#[test]
fn each_rule_names_its_key() {
    let cases = [
        ("image: ''\n", "image"),
        ("image: 'a b'\n", "image"),
        ("intervalSeconds: 0\n", "intervalSeconds"),
        ("intervalSeconds: 3601\n", "intervalSeconds"),
        ("logDir: var/log\n", "logDir"),
        ("logDir: /var/log/\n", "logDir"),
        ("logDir: /var/../log\n", "logDir"),
        ("logDir: /\n", "logDir"),
        ("logFile: a/b.log\n", "logFile"),
        ("logFile: ''\n", "logFile"),
        ("sidecarName: Collector\n", "sidecarName"),
        ("logVolumeName: -logs\n", "logVolumeName"),
        (
            "targetContainers: [controller, controller]\n",
            "targetContainers",
        ),
        ("targetContainers: [UPPER]\n", "targetContainers"),
        (
            "imagePullSecrets: [cnx-pull-secret, cnx-pull-secret]\n",
            "imagePullSecrets",
        ),
        ("imagePullSecrets: ['bad_name']\n", "imagePullSecrets"),
        (
            "felixVolume:\n  name: ingress-tap-logs\n",
            "felixVolume.name",
        ),
        (
            "felixVolume:\n  mountPath: /var/log/calico\n",
            "felixVolume.mountPath",
        ),
        ("felixVolume:\n  mountPath: run\n", "felixVolume.mountPath"),
        (
            "felixVolume:\n  socketFile: /abs\n",
            "felixVolume.socketFile",
        ),
        (
            "felixVolume:\n  socketFile: ../socket\n",
            "felixVolume.socketFile",
        ),
        (
            "felixVolume:\n  hostPath: relative\n",
            "felixVolume.hostPath",
        ),
        ("extraEnv:\n- {name: LOG_LEVEL, value: x}\n", "extraEnv"),
        ("extraEnv:\n- {name: '1A', value: x}\n", "extraEnv"),
        (
            "extraEnv:\n- {name: A, value: x}\n- {name: A, value: y}\n",
            "extraEnv",
        ),
        (
            "resources:\n  requests: {gpu: '1'}\n",
            "resources.requests.gpu",
        ),
        (
            "resources:\n  limits: {memory: lots}\n",
            "resources.limits.memory",
        ),
        (
            "resources:\n  requests: {memory: 128Mi}\n  limits: {memory: 64Mi}\n",
            "resources.requests.memory",
        ),
        ("runAsUser: 0\n", "runAsUser"),
        ("runAsGroup: -1\n", "runAsGroup"),
    ];
    for (text, key) in cases {
        assert_eq!(invalid_key(InjectConfig::from_yaml(text)), key, "{text:?}");
    }
}

#[test]
fn type_errors_are_parse_errors() {
    for text in [
        "logLevel: verbose\n",
        "felixVolume:\n  kind: nfs\n",
        "imagePullPolicy: sometimes\n",
        "intervalSeconds: -5\n",
    ] {
        assert!(
            matches!(InjectConfig::from_yaml(text), Err(ConfigError::Parse(_))),
            "{text:?}"
        );
    }
    let message = InjectConfig::from_yaml("logLevel: verbose\n")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("verbose") && message.contains("Warning"),
        "{message}"
    );
}

#[test]
fn log_levels_parse_in_any_case_and_print_canonically() {
    assert_eq!("wArNiNg".parse::<LogLevel>(), Ok(LogLevel::Warning));
    assert_eq!(LogLevel::Warning.to_string(), "Warning");
    assert!("warn".parse::<LogLevel>().is_err());
    let yaml = serde_norway::to_string(&LogLevel::Fatal).unwrap();
    assert_eq!(yaml.trim(), "Fatal");
}

#[test]
fn hash_is_stable_and_sensitive() {
    let config = InjectConfig::default();
    let hash = config.hash();
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(hash, InjectConfig::default().hash());
    let changed = InjectConfig {
        requests_per_interval: -1,
        ..InjectConfig::default()
    };
    assert_ne!(changed.hash(), hash);
    let reloaded = InjectConfig::from_yaml(&serde_norway::to_string(&config).unwrap()).unwrap();
    assert_eq!(reloaded.hash(), hash);
}

#[test]
fn derived_paths_join_their_parts() {
    let config = InjectConfig::default();
    assert_eq!(config.log_path(), "/var/log/calico/ingress/ingress.log");
    assert_eq!(
        config.felix_dial_target(),
        "/var/run/felix/nodeagent/socket"
    );
}

#[test]
fn path_overlap_is_component_wise() {
    assert!(paths_overlap("/var/log", "/var/log/calico/ingress"));
    assert!(paths_overlap(
        "/var/log/calico/ingress/",
        "/var/log/calico/ingress"
    ));
    assert!(paths_overlap(
        "/var/log/calico/ingress/x",
        "/var/log/calico/ingress"
    ));
    assert!(!paths_overlap(
        "/var/log/calico/ingress2",
        "/var/log/calico/ingress"
    ));
    assert!(!paths_overlap("/var/run/felix", "/var/log/calico/ingress"));
    assert!(same_path("/var//log/./calico/", "/var/log/calico"));
    assert!(!same_path("/var/log", "/var/log/calico"));
}
