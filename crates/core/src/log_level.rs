//! The log levels of the reference collector (logrus names), shared by the collector's
//! `LOG_LEVEL`, the webhook's `--log-level` and the injection config, so that every place
//! accepts and prints them the same way.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The collector's log levels (logrus names, which the reference collector uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything, including per-line detail.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Recoverable problems.
    Warning,
    /// Failures.
    Error,
    /// Failures that stop the collector.
    Fatal,
    /// Only panics.
    Panic,
}

/// What a log level may be, for error messages.
pub const ACCEPTED_LOG_LEVELS: &str =
    "Trace, Debug, Info, Warning, Error, Fatal or Panic (any case)";

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 7] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Fatal,
        LogLevel::Panic,
    ];

    /// Canonical capitalisation, as written into `LOG_LEVEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "Trace",
            LogLevel::Debug => "Debug",
            LogLevel::Info => "Info",
            LogLevel::Warning => "Warning",
            LogLevel::Error => "Error",
            LogLevel::Fatal => "Fatal",
            LogLevel::Panic => "Panic",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A string that names no log level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}; expected {ACCEPTED_LOG_LEVELS}")]
pub struct UnknownLogLevel(pub String);

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;

    /// Accepts any capitalisation, because annotations are typed by hand.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownLogLevel(text.to_owned()))
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl LogLevel {
    /// The `tracing` filter for this level. `tracing` has nothing above `error`, and nothing
    /// here aborts the process on a log call, so Fatal and Panic keep only errors.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => LevelFilter::ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_in_any_case_and_print_canonically() {
        assert_eq!("wArNiNg".parse::<LogLevel>(), Ok(LogLevel::Warning));
        assert_eq!("PANIC".parse::<LogLevel>(), Ok(LogLevel::Panic));
        assert_eq!(LogLevel::Warning.to_string(), "Warning");
        let err = "verbose".parse::<LogLevel>().unwrap_err();
        assert!(err.to_string().contains("verbose"));
        assert!(err.to_string().contains("Warning"));
        assert!("warn".parse::<LogLevel>().is_err());
    }
}
