//! The pod's view read by the admission fast path ([`crate::json_scan`]) instead of serde.
//!
//! Each reader follows its `Deserialize` impl in the parent module value for value, and gives
//! up (`None`) wherever that impl would refuse the pod or where following it exactly would take
//! more than this reader does: a repeated key (serde keeps the last value), a key or a kept
//! string with escapes, a part that is not of the expected JSON type. Giving up sends the review
//! to the serde path, which reads the same view or words the refusal.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{
    ContainerView, MetadataView, OurEntries, PodView, SpecView, VolumeView, OUR_KEY_PREFIX,
};
use crate::json_scan::{optional, Scanner, SeenKeys};

impl PodView {
    /// Reads the view of the pod object at the scanner's position.
    pub fn scan(scanner: &mut Scanner<'_>) -> Option<PodView> {
        let mut view = PodView::default();
        let mut seen = SeenKeys::default();
        scanner.object(|scanner, key| match key {
            "metadata" => {
                seen.first(0)?;
                view.metadata = optional(scanner, MetadataView::scan)?;
                Some(())
            }
            "spec" => {
                seen.first(1)?;
                view.spec = optional(scanner, SpecView::scan)?;
                Some(())
            }
            _ => scanner.skip(),
        })?;
        Some(view)
    }
}

impl MetadataView {
    fn scan(scanner: &mut Scanner<'_>) -> Option<MetadataView> {
        let mut view = MetadataView::default();
        let mut seen = SeenKeys::default();
        scanner.object(|scanner, key| match key {
            "labels" => {
                seen.first(0)?;
                view.labels = optional(scanner, OurEntries::scan)?;
                Some(())
            }
            "annotations" => {
                seen.first(1)?;
                view.annotations = optional(scanner, OurEntries::scan)?;
                Some(())
            }
            "name" => {
                seen.first(2)?;
                view.name = Some(raw_value(scanner)?);
                Some(())
            }
            "generateName" => {
                seen.first(3)?;
                view.generate_name = Some(raw_value(scanner)?);
                Some(())
            }
            _ => scanner.skip(),
        })?;
        Some(view)
    }
}

impl OurEntries {
    fn scan(scanner: &mut Scanner<'_>) -> Option<OurEntries> {
        let mut entries = BTreeMap::new();
        scanner.object(|scanner, key| {
            if key.starts_with(OUR_KEY_PREFIX) {
                // A repeated key: the last value wins, as in the map serde builds.
                entries.insert(key.to_owned(), scanner.str()?.to_owned());
            } else {
                scanner.checked_str()?;
            }
            Some(())
        })?;
        Some(OurEntries(entries))
    }
}

impl SpecView {
    fn scan(scanner: &mut Scanner<'_>) -> Option<SpecView> {
        let mut view = SpecView::default();
        let mut seen = SeenKeys::default();
        scanner.object(|scanner, key| match key {
            "containers" => {
                seen.first(0)?;
                view.containers = optional(scanner, ContainerView::scan_list)?.unwrap_or_default();
                Some(())
            }
            "initContainers" => {
                seen.first(1)?;
                view.init_containers = optional(scanner, ContainerView::scan_list)?;
                Some(())
            }
            "volumes" => {
                seen.first(2)?;
                view.volumes = optional(scanner, |scanner| list(scanner, VolumeView::scan))?;
                Some(())
            }
            "imagePullSecrets" => {
                seen.first(3)?;
                view.image_pull_secrets = optional(scanner, typed)?;
                Some(())
            }
            _ => scanner.skip(),
        })?;
        Some(view)
    }
}

impl ContainerView {
    fn scan_list(scanner: &mut Scanner<'_>) -> Option<Vec<ContainerView>> {
        list(scanner, ContainerView::scan)
    }

    fn scan(scanner: &mut Scanner<'_>) -> Option<ContainerView> {
        let mut view = ContainerView::default();
        let mut seen = SeenKeys::default();
        scanner.object(|scanner, key| match key {
            "name" => {
                seen.first(0)?;
                let name = optional(scanner, |scanner| scanner.str().map(str::to_owned))?;
                view.name = name.unwrap_or_default();
                Some(())
            }
            "volumeMounts" => {
                seen.first(1)?;
                view.volume_mounts = optional(scanner, typed)?;
                Some(())
            }
            _ => scanner.skip(),
        })?;
        Some(view)
    }
}

impl VolumeView {
    fn scan(scanner: &mut Scanner<'_>) -> Option<VolumeView> {
        let (name, text) = scanner.with_text(|scanner| {
            let mut name = None;
            let mut seen = SeenKeys::default();
            scanner.object(|scanner, key| match key {
                "name" => {
                    seen.first(0)?;
                    name = Some(scanner.str()?.to_owned());
                    Some(())
                }
                _ => scanner.skip(),
            })?;
            name
        })?;
        Some(VolumeView {
            name,
            text: text.into(),
        })
    }
}

fn list<'a, T>(
    scanner: &mut Scanner<'a>,
    mut read: impl FnMut(&mut Scanner<'a>) -> Option<T>,
) -> Option<Vec<T>> {
    let mut items = Vec::new();
    scanner.array(|scanner| {
        items.push(read(scanner)?);
        Some(())
    })?;
    Some(items)
}

/// A part kept as a Kubernetes type, read by serde from its own text: exactly that type's
/// reading, and these parts are small.
fn typed<T: DeserializeOwned>(scanner: &mut Scanner<'_>) -> Option<T> {
    serde_json::from_str(scanner.raw()?).ok()
}

fn raw_value(scanner: &mut Scanner<'_>) -> Option<Box<RawValue>> {
    RawValue::from_string(scanner.raw()?.to_owned()).ok()
}
