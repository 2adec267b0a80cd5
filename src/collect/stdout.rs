//! Reports as JSON lines on stdout: what the collector would send to Felix, for a machine with
//! no Calico, for debugging, or for a log pipeline. One line per report, Felix's field names.

use ingress_tap_felix_proto::{statistic, Action, DataplaneStats};
use serde_json::{json, Value};
use std::io::Write;

/// Renders one report as a JSON object with the proto's field names and enum names.
pub fn render(report: &DataplaneStats) -> Value {
    let protocol = match report
        .protocol
        .as_ref()
        .and_then(|p| p.number_or_name.as_ref())
    {
        Some(ingress_tap_felix_proto::protocol::NumberOrName::Name(name)) => json!(name),
        Some(ingress_tap_felix_proto::protocol::NumberOrName::Number(number)) => json!(number),
        None => Value::Null,
    };
    let stats: Vec<Value> = report
        .stats
        .iter()
        .map(|s| {
            json!({
                "direction": statistic::Direction::try_from(s.direction).map_or("?", |d| d.as_str_name()),
                "relativity": statistic::Relativity::try_from(s.relativity).map_or("?", |r| r.as_str_name()),
                "kind": statistic::Kind::try_from(s.kind).map_or("?", |k| k.as_str_name()),
                "action": Action::try_from(s.action).map_or("?", |a| a.as_str_name()),
                "value": s.value,
            })
        })
        .collect();
    let http_data: Vec<Value> = report
        .http_data
        .iter()
        .map(|h| json!({"x_forwarded_for": h.x_forwarded_for, "x_real_ip": h.x_real_ip}))
        .collect();
    json!({
        "src_ip": report.src_ip,
        "src_port": report.src_port,
        "dst_ip": report.dst_ip,
        "dst_port": report.dst_port,
        "protocol": protocol,
        "stats": stats,
        "http_data": http_data,
    })
}

/// Writes `reports`, one JSON line each, and flushes so a pipe reader sees whole intervals.
pub fn write_reports(out: &mut impl Write, reports: &[DataplaneStats]) -> std::io::Result<()> {
    for report in reports {
        write_report(out, report)?;
    }
    out.flush()
}

/// Writes one report as a JSON line, without flushing.
pub fn write_report(out: &mut impl Write, report: &DataplaneStats) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &render(report))?;
    out.write_all(b"\n")
}

/// Writes an interval as the messages Felix would get (see [`super::felix::messages`]), one
/// message in memory at a time, and flushes.
pub fn write_interval(
    out: &mut impl Write,
    report: &ingress_tap_core::collect::aggregate::IntervalReport,
    message_entries: usize,
) -> std::io::Result<()> {
    for connection in &report.connections {
        for message in super::felix::messages(connection, message_entries) {
            write_report(out, &message)?;
        }
    }
    out.flush()
}
