//! Kubernetes resource quantities, parsed just far enough to validate the sidecar's resources.
//!
//! The API server rejects a pod whose container requests more than its limit. A webhook that
//! injected such a sidecar would make every ingress pod fail to create, so the config loader
//! compares requests with limits before the webhook ever serves a pod.

use std::cmp::Ordering;

/// A parsed quantity, kept as a float: precise enough to compare the small values a sidecar uses.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Quantity(f64);

impl Quantity {
    /// Parses the Kubernetes quantity grammar: a decimal number followed by a binary suffix
    /// (`Ki` … `Ei`), a decimal suffix (`n`, `u`, `m`, `k`, `M` … `E`) or an exponent (`e3`).
    pub fn parse(text: &str) -> Option<Quantity> {
        let number_len = text
            .char_indices()
            .find(|(index, c)| !(c.is_ascii_digit() || *c == '.' || (*index == 0 && *c == '+')))
            .map_or(text.len(), |(index, _)| index);
        let (number, suffix) = text.split_at(number_len);
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = digits.parse().ok()?;
        let multiplier = suffix_multiplier(suffix)?;
        let scaled = value * multiplier;
        scaled.is_finite().then_some(Quantity(scaled))
    }

    /// Orders two quantities; `None` only for values that cannot be compared (never produced by `parse`).
    pub fn compare(self, other: Quantity) -> Option<Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

fn suffix_multiplier(suffix: &str) -> Option<f64> {
    let binary = |power: i32| Some(1024f64.powi(power));
    let decimal = |power: i32| Some(10f64.powi(power));
    match suffix {
        "" => decimal(0),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            let unsigned = digits
                .strip_prefix('-')
                .or_else(|| digits.strip_prefix('+'))
                .unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let power: i32 = digits.parse().ok()?;
            decimal(power)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_suffix_families() {
        assert_eq!(Quantity::parse("10m"), Some(Quantity(0.01)));
        assert_eq!(
            Quantity::parse("32Mi"),
            Some(Quantity(32.0 * 1024.0 * 1024.0))
        );
        assert_eq!(Quantity::parse("1.5G"), Some(Quantity(1.5e9)));
        assert_eq!(Quantity::parse("2e3"), Some(Quantity(2000.0)));
        assert_eq!(Quantity::parse("+1"), Some(Quantity(1.0)));
        assert_eq!(Quantity::parse(".5"), Some(Quantity(0.5)));
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        for text in [
            "", "Mi", "10 Mi", "10mb", "1..2", "-1", "1e", "1e+", "abc", ".",
        ] {
            assert_eq!(Quantity::parse(text), None, "{text:?} should be rejected");
        }
    }

    #[test]
    fn compares_across_suffixes() {
        let small = Quantity::parse("64Mi").unwrap();
        let large = Quantity::parse("1G").unwrap();
        assert_eq!(small.compare(large), Some(Ordering::Less));
        let milli = Quantity::parse("1000m").unwrap();
        let one = Quantity::parse("1").unwrap();
        assert_eq!(milli.compare(one), Some(Ordering::Equal));
    }
}
