//! What a line becomes: the [`Record`] of one request, or the reason it is [`Malformed`].

use std::net::IpAddr;

use super::HeaderValue;
use crate::model::Protocol;

/// One request as the ingress controller logged it.
///
/// Header values borrow from the line when they hold no escape, so a record lives no longer
/// than the line it came from; call [`Record::into_owned`] to keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The direct peer of the connection (`$realip_remote_addr`): a load balancer or the client.
    pub source_ip: IpAddr,
    /// `$realip_remote_port`.
    pub source_port: u16,
    /// The ingress pod's address on this connection (`$server_addr`).
    pub destination_ip: IpAddr,
    /// `$server_port`.
    pub destination_port: u16,
    /// `tcp` unless the line carries a `protocol` field saying otherwise.
    pub protocol: Protocol,
    /// The raw X-Forwarded-For value, decoded; `None` when nginx printed `-` or nothing.
    pub x_forwarded_for: Option<HeaderValue<'a>>,
    /// The raw X-Real-IP value, decoded; `None` when nginx printed `-` or nothing.
    pub x_real_ip: Option<HeaderValue<'a>>,
}

impl Record<'_> {
    /// Detaches the record from the line buffer it borrows from.
    pub fn into_owned(self) -> Record<'static> {
        Record {
            source_ip: self.source_ip,
            source_port: self.source_port,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            protocol: self.protocol,
            x_forwarded_for: self.x_forwarded_for.map(HeaderValue::into_owned),
            x_real_ip: self.x_real_ip.map(HeaderValue::into_owned),
        }
    }
}

/// Why a line that carries the marker could not be turned into a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Nothing but whitespace separates the marker from something that is not `{`.
    #[error("no JSON object follows the ingress marker")]
    NoJsonObject,
    /// The line ends inside the object: a truncated or partially written line.
    #[error("the ingress object is not terminated before the end of the line")]
    UnterminatedObject,
    /// The object breaks the (tolerant) syntax: a missing colon, comma or quote.
    #[error("the ingress object is not valid JSON")]
    InvalidJson,
    /// A required field is absent or holds no value (`-`, `null`, empty).
    #[error("required field `{0}` is missing or has no value")]
    MissingField(&'static str),
    /// A field holds a value of the wrong shape (not an IP address, not a port, …).
    #[error("field `{0}` has an invalid value")]
    InvalidField(&'static str),
    /// A field appears twice; which copy to believe would be a guess an attacker could steer.
    #[error("field `{0}` appears more than once")]
    DuplicateField(&'static str),
}

impl Malformed {
    /// A stable, low-cardinality reason label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Malformed::NoJsonObject => "no_json_object",
            Malformed::UnterminatedObject => "unterminated_object",
            Malformed::InvalidJson => "invalid_json",
            Malformed::MissingField(_) => "missing_field",
            Malformed::InvalidField(_) => "invalid_field",
            Malformed::DuplicateField(_) => "duplicate_field",
        }
    }

    /// The field the reason refers to, when there is one (a second metric label).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Malformed::MissingField(field)
            | Malformed::InvalidField(field)
            | Malformed::DuplicateField(field) => Some(field),
            Malformed::NoJsonObject | Malformed::UnterminatedObject | Malformed::InvalidJson => {
                None
            }
        }
    }
}
