//! The shell of `ingress-tap block`: reads inputs and the previous state, runs the pure
//! [`plan`](ingress_tap_core::block::plan), then prints or applies. Messages for the operator (warnings,
//! refusals, what changed) go to stderr, so stdout holds only the objects and can be piped to
//! a file or `kubectl apply`.

use super::apply::{self, ApplySettings, Outcome};
use super::{BlockOptions, DryRun};
use anyhow::{bail, Context};
use ingress_tap_core::block::input::{parse_argument, read_document, ReadOptions};
use ingress_tap_core::block::safety::{MinPrefix, SafetyRules};
use ingress_tap_core::block::targets::{self, ExistingState, Rendered};
use ingress_tap_core::block::{escape, plan_taken, to_yaml, BlockError, Intake, PlanRequest};
use std::io::{BufRead, Write};

/// Screens the candidates of every input as they are read; returns how many claimed entries
/// were left unread.
fn read_candidates(
    options: &BlockOptions,
    request: &PlanRequest,
    intake: &mut Intake,
) -> anyhow::Result<usize> {
    let read = ReadOptions {
        format: options.format,
        top: options.top,
        trust_spoofable_headers: options.trust_spoofable_headers,
    };
    let mut unread_claimed = 0;
    for address in &options.addresses {
        intake.take(
            request,
            &parse_argument(address, options.reason.as_deref())?,
        )?;
    }
    for path in &options.from {
        let stdin = std::io::stdin();
        let (name, mut reader): (String, Box<dyn BufRead>) = if path.as_os_str() == "-" {
            ("stdin".to_owned(), Box::new(stdin.lock()))
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", escape(&path.display().to_string())))?;
            (
                path.display().to_string(),
                Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
            )
        };
        let stats = read_document::<BlockError>(&name, &mut reader, &read, &mut |candidate| {
            intake.take(request, &candidate)
        })?;
        if !options.allow_empty {
            stats.require_entries(&name)?;
        }
        unread_claimed += stats.unread_claimed;
    }
    Ok(unread_claimed)
}

/// Runs `ingress-tap block`.
pub async fn run(options: BlockOptions) -> anyhow::Result<()> {
    let settings = options.target_settings();
    let mut request = PlanRequest {
        candidates: Vec::new(),
        removals: options.remove.clone(),
        split: options.split,
        settings: settings.clone(),
        safety: SafetyRules {
            trusted_proxies: options.trusted_proxies.clone(),
            cluster_ranges: options.cluster_ranges.clone(),
        },
        ttl: options.ttl,
        now: options.now.unwrap_or_else(jiff::Timestamp::now),
        prune: options.prune,
        max_entries: options.max_entries,
        min_prefix: MinPrefix {
            v4: options.min_prefix_v4,
            v6: options.min_prefix_v6,
        },
        max_addresses: options.max_addresses,
        force: options.force,
        trust_spoofable_headers: options.trust_spoofable_headers,
        unread_claimed: 0,
    };
    let mut intake = Intake::default();
    request.unread_claimed = read_candidates(&options, &request, &mut intake)?;
    // Fails early, before any cluster access, for targets that render nothing.
    let to_read = targets::objects_to_read(&settings)?;

    let client = if options.apply {
        if settings.target == targets::TargetKind::Nftables {
            bail!("--apply writes Kubernetes objects; load the nftables output with `nft -f FILE` on the firewall instead");
        }
        Some(
            kube::Client::try_default().await.context(
                "cannot reach the cluster for --apply (KUBECONFIG or in-cluster config)",
            )?,
        )
    } else {
        None
    };
    let existing = match (&client, &options.existing) {
        (Some(client), _) => apply::read_existing(client, &to_read).await?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", escape(&path.display().to_string())))?;
            ExistingState::parse(&text)?
        }
        (None, None) => ExistingState::default(),
    };

    let plan = plan_taken(&request, intake, &existing)?;
    eprint!("{}", plan.report);

    let printed = plan.complete;
    match (client, plan.rendered) {
        (None, Rendered::Objects(_)) => {
            // Printed whole: labels and annotations others put on the objects stay.
            let Rendered::Objects(objects) = printed else {
                bail!("the completed objects are not Kubernetes objects");
            };
            let yaml = to_yaml(&objects).context("cannot write the objects as YAML")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("cannot write to standard output")?;
        }
        (None, Rendered::Nftables(text)) => {
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to standard output")?;
        }
        (Some(client), Rendered::Objects(objects)) => {
            let settings = ApplySettings {
                dry_run: options.dry_run == DryRun::Server,
                force_conflicts: options.force_conflicts,
            };
            let owned = targets::owned_optional_fields(&request.settings)?;
            for (object, outcome) in
                apply::apply_objects(&client, &objects, &existing, &owned, settings).await?
            {
                let said = match outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Applied => "applied (server-side, field manager ingress-tap)",
                    Outcome::DryRun => "accepted by the server (dry run, not persisted)",
                };
                eprintln!("{object}: {said}");
            }
        }
        (Some(_), Rendered::Nftables(_)) => {
            bail!("--apply cannot write nftables output")
        }
    }
    Ok(())
}
