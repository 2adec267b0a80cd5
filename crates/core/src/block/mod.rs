//! `ingress-tap block`: chosen IPs and CIDRs into the enforcement objects of the user's
//! platform, merged into what is already there, never past the safety rules.
//!
//! The core is pure: [`plan`] takes candidates, the safety rules, the previous state and the
//! clock, and returns the objects to write plus a report of every decision. The `ingress-tap`
//! crate's `block::run` is the shell around it: it reads inputs and previous state (files, or
//! the cluster with `--apply`), prints YAML or applies it through its `block::apply`. The path
//! from an event to a block and back is described in docs/block.md.

pub mod input;
pub mod merge;
pub mod safety;
pub mod targets;

use input::Candidate;
use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use merge::{expiry_after, Blocklist, Lifetime};
use safety::{MinPrefix, RefusalReason, SafetyRules};
use std::collections::BTreeMap;
use std::fmt;
use targets::{ExistingState, ObjectRef, Rendered, TargetError, TargetKind, TargetSettings};

/// `4h`, `30m`, `2d`, `1h30m`, `90s`: the units CrowdSec decisions and nft use.
pub fn parse_ttl(text: &str) -> Result<SignedDuration, String> {
    let invalid = || format!("{text:?} is not a duration like 4h, 30m, 2d or 1h30m");
    let mut seconds: i64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let count: i64 = digits.parse().map_err(|_| invalid())?;
        seconds = count
            .checked_mul(unit)
            .and_then(|part| seconds.checked_add(part))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() || seconds <= 0 {
        return Err(invalid());
    }
    Ok(SignedDuration::from_secs(seconds))
}

pub fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|error| format!("{text:?} is not an RFC 3339 time: {error}"))
}

pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    crate::net::parse_net(text).ok_or_else(|| format!("{text:?} is not an IP address or CIDR"))
}

/// Text from the input as it may be echoed to a terminal or a log: control characters
/// (newlines above all, which would forge report lines), line and paragraph separators and
/// bidirectional overrides are written as escapes; everything else is kept.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if c.is_control() || invisible {
            escaped.extend(c.escape_default());
        } else if c == '\\' {
            escaped.push_str("\\\\");
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// A DNS-1123 label (RFC 1123): namespaces, Calico tier names.
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// A DNS-1123 subdomain: the names of ConfigMaps, Ingresses and most objects.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

pub fn parse_namespace(text: &str) -> Result<String, String> {
    if is_dns_label(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{:?} is not a namespace name: 1-63 lower-case letters, digits and inner dashes",
            escape(text)
        ))
    }
}

/// Calico names a policy in a tier `TIER.NAME`, so the tier is a label (no dots). The
/// `default` tier is refused: a deny-then-Pass policy there would skip the user's own policies
/// (docs/block.md says why the policy has a tier of its own).
pub fn parse_tier(text: &str) -> Result<String, String> {
    if text == "default" {
        return Err("the default tier would let the final Pass skip every policy of your own; use a tier of its own, ordered before yours".to_owned());
    }
    if is_dns_label(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{:?} is not a Calico tier name: 1-63 lower-case letters, digits and inner dashes",
            escape(text)
        ))
    }
}

/// nft identifiers: a letter, then letters, digits and underscores.
pub fn parse_nft_table(text: &str) -> Result<String, String> {
    let valid = text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{:?} is not an nftables table name: a letter, then up to 63 letters, digits and underscores",
            escape(text)
        ))
    }
}

/// Calico parses the selector itself; here only what no selector holds is refused.
pub fn parse_selector(text: &str) -> Result<String, String> {
    if text.trim().is_empty() || text.chars().any(char::is_control) || text.len() > 1024 {
        Err(format!(
            "{:?} is not a Calico selector (empty, over 1,024 bytes, or holding control characters)",
            escape(text)
        ))
    } else {
        Ok(text.to_owned())
    }
}

/// Names end up in object names, label values and nft identifiers: keep to what all accept.
pub fn parse_list_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{:?}: use 1-40 lower-case letters, digits and inner dashes",
            escape(text)
        ))
    }
}

/// Everything [`plan`] decides from, besides the previous state.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub candidates: Vec<Candidate>,
    pub removals: Vec<IpNet>,
    /// Split wider entries holding a removed network instead of failing.
    pub split: bool,
    pub settings: TargetSettings,
    pub safety: SafetyRules,
    pub ttl: SignedDuration,
    pub now: Timestamp,
    pub prune: bool,
    pub max_entries: usize,
    pub min_prefix: MinPrefix,
    /// In [`safety::address_units`].
    pub max_addresses: u64,
    /// Lifts the entry cap, the minimum prefix and the address limit.
    pub force: bool,
    /// Block candidates whose provenance is `claimed`.
    pub trust_spoofable_headers: bool,
    /// Claimed entries the input held but that were not read, for the report.
    pub unread_claimed: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Merge(#[from] merge::MergeError),
    #[error("refused: {object} would hold {entries} entries, over the cap of {cap}; check the input, or raise --max-entries or pass --force")]
    OverCap {
        object: String,
        entries: usize,
        cap: usize,
    },
    #[error("refused: the input would block {units} addresses (IPv4 addresses plus IPv6 /48 networks), over the limit of {limit}; check the input, or raise --max-addresses or pass --force")]
    TooManyAddresses { units: u64, limit: u64 },
    #[error("--remove {removal}: {object} still blocks it through {covers}; nothing was changed. Pass --split to remove exactly {removal} by splitting {those} into the networks around it, or --remove the wider entry")]
    StillCovered {
        removal: IpNet,
        object: String,
        /// `203.0.113.0/24 (until ...)`, comma separated.
        covers: String,
        those: &'static str,
    },
}

/// A candidate the safety rules kept out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub net: IpNet,
    pub reason: RefusalReason,
    pub origin: String,
}

/// What a run did to one object's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    pub object: ObjectRef,
    pub added: Vec<(IpNet, Lifetime, Option<String>)>,
    pub extended: Vec<(IpNet, Lifetime, Lifetime)>,
    pub removed: Vec<IpNet>,
    pub pruned: Vec<IpNet>,
    /// `(covered, cover)`.
    pub folded: Vec<(IpNet, IpNet)>,
    /// `(removed network, split entry, pieces it became)`, from `--split`.
    pub split: Vec<(IpNet, IpNet, usize)>,
    /// Expired but kept, because `--prune` was not given.
    pub expired: Vec<IpNet>,
    pub entries: usize,
    /// Whether the list differs from what the object held before.
    pub changed: bool,
    /// How many entries were added, extended, folded and found expired; the lists above hold
    /// the first [`LISTED`] of each.
    pub totals: ChangeTotals,
}

/// Counts behind the lists of an [`ObjectReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeTotals {
    pub added: usize,
    pub extended: usize,
    pub folded: usize,
    pub expired: usize,
}

/// Every decision of a run, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Candidates read from every input, duplicates included.
    pub candidates: usize,
    /// Entries of /suspicious's claimed lists left unread (no --trust-spoofable-headers).
    pub unread_claimed: usize,
    pub refused: Vec<Refusal>,
    /// Candidates whose block would already have ended (old events).
    pub already_expired: Vec<(IpNet, String)>,
    /// All refused, skipped as expired, and clamped candidates; the lists above hold the
    /// first [`LISTED`] of each.
    pub refused_total: usize,
    pub refused_by_category: BTreeMap<&'static str, usize>,
    pub expired_total: usize,
    pub clamped_total: usize,
    /// Candidates whose event time lay beyond [`MAX_CLOCK_SKEW`] ahead of the clock: their
    /// blocks count from now instead. `(net, origin, event time)`.
    pub clamped: Vec<(IpNet, String, Timestamp)>,
    pub warnings: Vec<String>,
    pub objects: Vec<ObjectReport>,
}

fn describe(lifetime: &Lifetime) -> String {
    match lifetime {
        Lifetime::Until(expiry) => format!("until {expiry}"),
        Lifetime::Permanent => "permanently".to_owned(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        if self.unread_claimed > 0 {
            writeln!(
                f,
                "warning: {} entries of claimed_events and top_claimed not read: the collector \
                 took their addresses from headers no trusted proxy vouches for, where any \
                 client can name anyone; pass --trust-spoofable-headers to read them",
                self.unread_claimed
            )?;
        }
        for refusal in &self.refused {
            writeln!(
                f,
                "refused: {} ({}): {}",
                refusal.net,
                escape(&refusal.origin),
                refusal.reason
            )?;
        }
        for (net, origin) in &self.already_expired {
            writeln!(
                f,
                "skipped: {net} ({}): its block would already have expired",
                escape(origin)
            )?;
        }
        for (listed, total, what) in [
            (self.refused.len(), self.refused_total, "refused"),
            (
                self.already_expired.len(),
                self.expired_total,
                "skipped as expired",
            ),
            (self.clamped.len(), self.clamped_total, "clamped"),
        ] {
            if total > listed {
                writeln!(f, "... and {} more {what} (not listed)", total - listed)?;
            }
        }
        for (net, origin, time) in &self.clamped {
            writeln!(
                f,
                "clamped: {net} ({}): event time {time} is more than {} ahead of the clock; \
                 its block counts from now",
                escape(origin),
                MAX_CLOCK_SKEW_TEXT
            )?;
        }
        for object in &self.objects {
            let name = &object.object;
            for (net, lifetime, reason) in &object.added {
                let reason = reason
                    .as_deref()
                    .map(|reason| format!(" [{}]", escape(reason)))
                    .unwrap_or_default();
                writeln!(f, "{name}: add {net} {}{reason}", describe(lifetime))?;
            }
            for (net, from, to) in &object.extended {
                writeln!(
                    f,
                    "{name}: extend {net} from {} to {}",
                    describe(from),
                    describe(to)
                )?;
            }
            for (removed, cover, pieces) in &object.split {
                writeln!(
                    f,
                    "{name}: split {cover} into {pieces} networks around {removed}"
                )?;
            }
            for net in &object.removed {
                writeln!(f, "{name}: remove {net}")?;
            }
            for net in &object.pruned {
                writeln!(f, "{name}: prune {net} (expired)")?;
            }
            for (covered, cover) in &object.folded {
                writeln!(f, "{name}: {covered} is covered by {cover}")?;
            }
            for net in &object.expired {
                writeln!(
                    f,
                    "{name}: {net} has expired and stays listed until --prune"
                )?;
            }
            for (listed, total, what) in [
                (object.added.len(), object.totals.added, "added"),
                (object.extended.len(), object.totals.extended, "extended"),
                (object.folded.len(), object.totals.folded, "covered"),
                (object.expired.len(), object.totals.expired, "expired"),
            ] {
                if total > listed {
                    writeln!(
                        f,
                        "{name}: ... and {} more {what} (not listed)",
                        total - listed
                    )?;
                }
            }
            let state = if object.changed {
                "changed"
            } else {
                "no change"
            };
            writeln!(f, "{name}: {} entries, {state}", object.entries)?;
        }
        if self.candidates > 0 || self.unread_claimed > 0 {
            writeln!(f, "{}", self.summary())?;
        }
        Ok(())
    }
}

impl Report {
    /// One line counting what became of the input.
    pub fn summary(&self) -> String {
        let refused = self.refused_total;
        let expired = self.expired_total;
        let accepted = self.candidates.saturating_sub(refused + expired);
        let by_category: Vec<String> = self
            .refused_by_category
            .iter()
            .map(|(category, count)| format!("{count} {category}"))
            .collect();
        let by_category = if by_category.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_category.join(", "))
        };
        let mut line = format!(
            "summary: {} candidates: {accepted} accepted, {refused} refused{by_category}, \
             {expired} already expired",
            self.candidates
        );
        if self.clamped_total > 0 {
            line.push_str(&format!(", {} clamped to now", self.clamped_total));
        }
        if self.unread_claimed > 0 {
            line.push_str(&format!(", {} claimed not read", self.unread_claimed));
        }
        line
    }
}

/// The objects to write and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Only the fields this tool owns: what server-side apply sends.
    pub rendered: Rendered,
    /// The objects as they will be stored: `rendered` over the previous objects, everything
    /// this tool does not own kept. What is printed, and what the size limits are checked on.
    pub complete: Rendered,
    pub report: Report,
}

/// How far ahead of the clock an event's time may be before it is taken as wrong (a skewed
/// collector clock, or a forged event) and its block counted from now instead: otherwise a
/// time in 2099 would block until 2099.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(300);
const MAX_CLOCK_SKEW_TEXT: &str = "5m";

/// Screens, merges and renders. Pure: the same request over the same state always gives the
/// same plan.
pub fn plan(request: &PlanRequest, existing: &ExistingState) -> Result<Plan, BlockError> {
    let mut intake = Intake::default();
    for candidate in &request.candidates {
        intake.take(request, candidate)?;
    }
    plan_taken(request, intake, existing)
}

/// How many refusals, skips and clamps the report lists one by one; the rest are counted. A
/// hostile feed of a million refused lines must not become a million lines kept in memory.
pub const LISTED: usize = 1_000;

/// Candidates screened as they are read: what is kept grows with the distinct entries
/// accepted, not with the lines read, and the entry cap is checked on the way.
#[derive(Debug, Default)]
pub struct Intake {
    report: Report,
    /// Accepted entries, with an index into `reasons`; sorted and deduplicated from time to
    /// time, keeping the longest lifetime and the first reason of each network.
    pending: Vec<(IpNet, Lifetime, u32)>,
    compacted: usize,
    reasons: Vec<String>,
    reason_ids: std::collections::HashMap<String, u32>,
    headers_only: std::collections::BTreeSet<IpNet>,
}

const NO_REASON: u32 = u32::MAX;

impl Intake {
    /// Screens one candidate.
    pub fn take(&mut self, request: &PlanRequest, candidate: &Candidate) -> Result<(), BlockError> {
        let report = &mut self.report;
        report.candidates += 1;
        if let Err(reason) = screen(request, candidate) {
            *report
                .refused_by_category
                .entry(reason.category())
                .or_default() += 1;
            report.refused_total += 1;
            if report.refused.len() < LISTED {
                report.refused.push(Refusal {
                    net: candidate.net,
                    reason,
                    origin: candidate.origin.clone(),
                });
            }
            return Ok(());
        }
        let mut start = candidate.observed_at.unwrap_or(request.now);
        if start.duration_since(request.now) > MAX_CLOCK_SKEW {
            report.clamped_total += 1;
            if report.clamped.len() < LISTED {
                report
                    .clamped
                    .push((candidate.net, candidate.origin.clone(), start));
            }
            start = request.now;
        }
        let expiry = expiry_after(start, request.ttl);
        if expiry <= request.now {
            report.expired_total += 1;
            if report.already_expired.len() < LISTED {
                report
                    .already_expired
                    .push((candidate.net, candidate.origin.clone()));
            }
            return Ok(());
        }
        if candidate.seen_only_in_headers() {
            self.headers_only.insert(candidate.net);
        }
        let reason = match &candidate.reason {
            None => NO_REASON,
            Some(reason) => match self.reason_ids.get(reason) {
                Some(id) => *id,
                None => {
                    let id = u32::try_from(self.reasons.len()).unwrap_or(NO_REASON);
                    self.reasons.push(reason.clone());
                    self.reason_ids.insert(reason.clone(), id);
                    id
                }
            },
        };
        self.pending
            .push((candidate.net, Lifetime::Until(expiry), reason));
        if self.pending.len() >= (2 * self.compacted).max(1 << 16) {
            self.compact();
            self.check_cap(request, &candidate.origin)?;
        }
        Ok(())
    }

    fn compact(&mut self) {
        // Longest lifetime first within a network; the earliest reason read wins ties.
        self.pending
            .sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut kept: Vec<(IpNet, Lifetime, u32)> = Vec::with_capacity(self.pending.len());
        for (net, lifetime, reason) in self.pending.drain(..) {
            match kept.last_mut() {
                Some(last) if last.0 == net => {
                    if last.2 == NO_REASON || (reason != NO_REASON && reason < last.2) {
                        last.2 = reason;
                    }
                }
                _ => kept.push((net, lifetime, reason)),
            }
        }
        self.compacted = kept.len();
        self.pending = kept;
    }

    /// The cap on what has been read so far, covered entries folded as the merge will fold
    /// them: a feed far over the cap stops while it is being read.
    fn check_cap(&self, request: &PlanRequest, origin: &str) -> Result<(), BlockError> {
        if request.force {
            return Ok(());
        }
        let mut entries = 0usize;
        let mut cover: Option<IpNet> = None;
        for (net, _, _) in &self.pending {
            if cover.is_some_and(|cover| cover.contains(net)) {
                continue;
            }
            cover = Some(*net);
            entries += 1;
        }
        if entries > request.max_entries {
            return Err(BlockError::OverCap {
                object: format!("the input read up to {}", escape(origin)),
                entries,
                cap: request.max_entries,
            });
        }
        Ok(())
    }
}

/// [`plan`] for candidates already screened by an [`Intake`].
pub fn plan_taken(
    request: &PlanRequest,
    mut intake: Intake,
    existing: &ExistingState,
) -> Result<Plan, BlockError> {
    let slots = targets::slots(&request.settings)?;
    intake.compact();
    let mut report = intake.report;
    report.unread_claimed = request.unread_claimed;
    let reasons = intake.reasons;
    let accepted: BTreeMap<IpNet, (Lifetime, Option<String>)> = intake
        .pending
        .into_iter()
        .map(|(net, lifetime, reason)| {
            let reason = reasons.get(reason as usize).cloned();
            (net, (lifetime, reason))
        })
        .collect();
    let headers_only: Vec<IpNet> = intake.headers_only.into_iter().collect();
    report.warnings = target_warnings(&request.settings, &headers_only);
    let units = safety::address_units(accepted.keys());
    if units > request.max_addresses && !request.force {
        return Err(BlockError::TooManyAddresses {
            units,
            limit: request.max_addresses,
        });
    }

    let mut lists = Vec::with_capacity(slots.len());
    for slot in slots {
        let stored = targets::read_stored(&slot, existing)?;
        let mut list = Blocklist::from_stored(&stored.nets, stored.expiries.as_deref())?;
        let before = list.clone();
        let mut object = ObjectReport {
            object: slot.object.clone(),
            added: Vec::new(),
            extended: Vec::new(),
            removed: Vec::new(),
            pruned: Vec::new(),
            folded: Vec::new(),
            split: Vec::new(),
            expired: Vec::new(),
            entries: 0,
            changed: false,
            totals: ChangeTotals::default(),
        };
        for (net, (lifetime, _)) in &accepted {
            list.add(*net, *lifetime);
        }
        for removal in &request.removals {
            object.removed.extend(list.remove_within(removal));
            let covers = list.strict_covers(removal);
            if covers.is_empty() {
                continue;
            }
            if !request.split {
                let listed: Vec<String> = covers
                    .iter()
                    .map(|(cover, lifetime)| format!("{cover} ({})", describe(lifetime)))
                    .collect();
                return Err(BlockError::StillCovered {
                    removal: *removal,
                    object: slot.object.to_string(),
                    covers: listed.join(", "),
                    those: if covers.len() == 1 { "it" } else { "them" },
                });
            }
            for (cover, pieces) in list.split_around(removal) {
                object.split.push((*removal, cover, pieces));
            }
        }
        if request.prune {
            object.pruned = list.prune(request.now);
        }
        object.folded = list.collapse();
        object.totals.folded = object.folded.len();
        object.folded.truncate(LISTED);
        if !request.prune {
            object.expired = list.expired(request.now);
            object.totals.expired = object.expired.len();
            object.expired.truncate(LISTED);
        }
        object.entries = list.len();
        if list.len() > request.max_entries && !request.force {
            return Err(BlockError::OverCap {
                object: slot.object.to_string(),
                entries: list.len(),
                cap: request.max_entries,
            });
        }
        // Reported from the difference itself, so that folding (which may lengthen a cover's
        // lifetime without any add) is reported exactly as it changes the object.
        for (net, lifetime) in list.entries() {
            match before.lifetime(net) {
                None => {
                    let reason = accepted.get(net).and_then(|(_, reason)| reason.clone());
                    object.totals.added += 1;
                    if object.added.len() < LISTED {
                        object.added.push((*net, *lifetime, reason));
                    }
                }
                Some(previous) if previous < *lifetime => {
                    object.totals.extended += 1;
                    if object.extended.len() < LISTED {
                        object.extended.push((*net, previous, *lifetime));
                    }
                }
                Some(_) => {}
            }
        }
        object.changed = list != before;
        report.objects.push(object);
        lists.push((slot, list));
    }
    let rendered = targets::render(&request.settings, &lists, existing, request.now)?;
    let complete = targets::complete(&request.settings, &rendered, existing)?;
    Ok(Plan {
        rendered,
        complete,
        report,
    })
}

/// The rules a candidate must pass, the first it breaks named. Claimed comes first: it says
/// the address may be anyone's, whatever range it falls in.
fn screen(request: &PlanRequest, candidate: &Candidate) -> Result<(), RefusalReason> {
    if candidate.is_claimed() && !request.trust_spoofable_headers {
        return Err(RefusalReason::Claimed);
    }
    request.safety.check(&candidate.net)?;
    if !request.force {
        request.min_prefix.check(&candidate.net)?;
    }
    Ok(())
}

fn target_warnings(settings: &TargetSettings, headers_only: &[IpNet]) -> Vec<String> {
    let mut warnings = Vec::new();
    match settings.target {
        TargetKind::Calico if !headers_only.is_empty() => {
            // Several events may name one address; name it once.
            let listed: Vec<String> = headers_only
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(IpNet::to_string)
                .collect();
            warnings.push(format!(
                "{} seen only in HTTP headers: Calico policy sees the connection's source (the \
                 proxy in front), so these entries take effect only where that address reaches \
                 the cluster unchanged; block them at the ingress (--target ingress-nginx or \
                 nginx-inc) or at the firewall in front (--target nftables)",
                listed.join(", ")
            ));
        }
        TargetKind::IngressNginx => {
            warnings.push(targets::ingress_nginx::TRUST_WARNING.to_owned());
        }
        _ => {}
    }
    warnings
}

/// Prints rendered objects as a YAML stream (`---` before each document).
pub fn to_yaml(objects: &[serde_json::Value]) -> Result<String, serde_norway::Error> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(object)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("4h"), Ok(SignedDuration::from_hours(4)));
        assert_eq!(parse_ttl("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_ttl("2d"), Ok(SignedDuration::from_hours(48)));
        assert_eq!(parse_ttl("90s"), Ok(SignedDuration::from_secs(90)));
        for bad in ["", "4", "h", "0h", "4x", "-4h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn list_names_fit_every_target() {
        assert!(parse_list_name("edge-1").is_ok());
        for bad in ["", "Edge", "a_b", "-a", "a-", "a.b", &"a".repeat(41)] {
            assert!(parse_list_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
