//! The status page: one server-rendered HTML document a person reads at a glance (stack
//! health, every resource with its conditions and drift, a rejected manifest, the audit
//! trail, an SVG timeline of the last hour). maud escapes every interpolated value; the page
//! refreshes itself and needs no JavaScript.

use crate::plan::ConditionStatus;
use crate::status::{PassResult, Phase, ResourceStatus, Status, describe_drift};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::time::{Duration, SystemTime};

/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 5;
/// The timeline's span.
const TIMELINE: Duration = Duration::from_secs(3600);
const SVG_WIDTH: f64 = 720.0;
const SVG_HEIGHT: f64 = 80.0;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d1d1f}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}\
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}\
.ok{color:#176f2c}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00}\
.phase{font-size:1.4rem;font-weight:700}code{font-size:.85rem}";

fn phase_class(p: Phase) -> &'static str {
    match p {
        Phase::Ready => "ok",
        Phase::Degraded => "bad",
        Phase::Starting | Phase::Standby => "warn",
    }
}

fn condition_cell(r: &ResourceStatus, kind: &str, good: ConditionStatus) -> Markup {
    match r.condition(kind) {
        Some(c) => {
            let class = match c.status {
                s if s == good => "ok",
                ConditionStatus::Unknown => "warn",
                _ => "bad",
            };
            html! { span class=(class) title=(c.message) { (format!("{:?}", c.status)) " " small { (c.reason) } } }
        }
        None => html! { "–" },
    }
}

fn timeline(status: &Status, now: SystemTime) -> Markup {
    let passes = status.passes_within(now, TIMELINE);
    let longest = passes
        .iter()
        .map(|p| p.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut bars = String::new();
    for p in &passes {
        let age = now
            .duration_since(p.started.0)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let x = SVG_WIDTH * (1.0 - age / TIMELINE.as_secs_f64());
        let h = 4.0 + (SVG_HEIGHT - 8.0) * (p.duration_ms as f64 / longest);
        let color = match p.result {
            PassResult::Converged => "#2e7d32",
            PassResult::Drifted => "#f9a825",
            PassResult::Failed => "#c62828",
        };
        // Every value here is a number or a fixed word: nothing from outside reaches the SVG
        // unescaped.
        bars.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"3\" height=\"{h:.1}\" fill=\"{color}\"><title>{} {} ms, {} drifts, {} repairs</title></rect>",
            p.result.as_str(),
            p.duration_ms,
            p.drifts_found,
            p.repairs,
            y = SVG_HEIGHT - h,
        ));
        if p.repairs > 0 {
            bars.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"4\" r=\"3\" fill=\"#1565c0\"/>",
                x + 1.5
            ));
        }
    }
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(SVG_WIDTH) height=(SVG_HEIGHT)
            viewBox=(format!("0 0 {SVG_WIDTH} {SVG_HEIGHT}")) role="img"
            aria-label="passes in the last hour: bar height is duration, colour the result, a blue dot a repair" {
            rect width=(SVG_WIDTH) height=(SVG_HEIGHT) fill="#f5f5f7" {}
            (PreEscaped(bars))
        }
    }
}

/// The whole page.
pub fn render(status: &Status, now: SystemTime) -> String {
    let title = format!(
        "stackwarden — {}",
        status.stack.as_deref().unwrap_or("starting")
    );
    let drifted = status.drifted().count();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                p {
                    span id="phase" class={"phase " (phase_class(status.phase))} { (format!("{:?}", status.phase)) }
                    " · environment " b { (status.environment.as_deref().unwrap_or("?")) }
                    " · mode " b { (status.mode.map(|m| format!("{m:?}").to_lowercase()).unwrap_or_else(|| "?".into())) }
                    " · lease " b { (status.lease.role) }
                    @if let Some(h) = &status.lease.holder { " (" (h) ")" }
                    " · " (status.resources.len()) " resources, " span id="drifted-count" { (drifted) " drifted" }
                }
                @if let Some(p) = &status.last_pass {
                    p { "Last pass " (p.started) " · " (p.trigger.as_str()) " · " (p.result.as_str())
                        " · " (p.duration_ms) " ms · " (p.writes) " writes" }
                }
                @if let Some(src) = &status.source {
                    p id="source" {
                        "Source " code { (src.url) }
                        " · revision " b { (src.revision.map_or_else(|| "none yet".to_string(), |r| r.to_string())) }
                        @if let Some(p) = &src.publisher {
                            @if let Some(c) = &p.commit { " · commit " code { (c) } }
                        }
                        @if src.stale { " · " span class="bad" { "pointer expired" } }
                        @if let Some(e) = &src.last_error { " · " span class="bad" { (e) } }
                    }
                    @if let Some(r) = &src.rejected {
                        section id="source-rejected" {
                            h2 class="bad" { "Published revision refused — the last good revision stays in force" }
                            p { (r.message) }
                        }
                    }
                }
                @if let Some(r) = &status.manifest.rejected {
                    section id="rejected" {
                        h2 class="bad" { "Manifest edit rejected — the last good revision stays in force" }
                        ul { @for e in &r.errors { li { pre { (e) } } } }
                    }
                }
                @if !status.errors.is_empty() {
                    section id="errors" {
                        h2 class="bad" { "Errors" }
                        ul { @for e in &status.errors { li { (e) } } }
                    }
                }
                h2 { "Resources" }
                table id="resources" {
                    thead { tr { th { "Resource" } th { "Mode" } th { "Ready" } th { "Synced" } th { "Drifted" } th { "Drift" } } }
                    tbody {
                        @for r in &status.resources {
                            tr class="resource" data-resource=(format!("{}/{}", r.kind, r.name))
                                data-drifted=(if r.drift.is_some() { "true" } else { "false" }) {
                                td { code { (r.kind) "/" (r.name) } }
                                td { (format!("{:?}", r.mode).to_lowercase()) }
                                td { (condition_cell(r, "Ready", ConditionStatus::True)) }
                                td { (condition_cell(r, "Synced", ConditionStatus::True)) }
                                td { (condition_cell(r, "Drifted", ConditionStatus::False)) }
                                td {
                                    @if let Some(d) = &r.drift {
                                        span class="bad" { "drifted" } " " (describe_drift(d))
                                        @if let Some(since) = r.drifted_since { br; small { "since " (since) } }
                                    }
                                    @for v in &r.violations { br; span class="bad" { "policy " (v.rule) ": " (v.message) } }
                                    @if let Some(e) = &r.last_error { br; span class="bad" { "error: " (e) } }
                                }
                            }
                        }
                    }
                }
                h2 { "Alerts" }
                @if status.alerts.active.is_empty() {
                    p id="alerts" class="ok" { "None firing." }
                } @else {
                    table id="alerts" {
                        thead { tr { th { "Alert" } th { "Resource" } th { "Since" } th { "What differs" } th { "Done" } } }
                        tbody {
                            @for a in &status.alerts.active {
                                tr class="alert" {
                                    td class="bad" { (a.name.as_str()) }
                                    td { code { (a.labels.get("kind").map_or("", String::as_str)) "/" (a.labels.get("resource").map_or("", String::as_str)) } }
                                    td { (crate::status::Timestamp(a.starts_at)) }
                                    td { (a.annotations.get("differs").map_or("", String::as_str)) }
                                    td { (a.annotations.get("action").map_or("", String::as_str)) }
                                }
                            }
                        }
                    }
                }
                @if !status.alerts.receivers.is_empty() {
                    p { "Receivers: "
                        @for r in &status.alerts.receivers {
                            span class="receiver" data-receiver=(r.name) {
                                b { (r.name) } " (" (r.kind) ", " (r.pending) " pending, " (r.dropped) " dropped"
                                @if let Some(t) = r.last_success { ", last delivered " (crate::status::Timestamp(t)) }
                                @if let (Some(k), Some(e)) = (r.last_error_kind, &r.last_error) {
                                    ", " span class="bad" {
                                        "failing (" (k.as_str()) ")"
                                        @if let Some(t) = r.failing_since { " since " (crate::status::Timestamp(t)) }
                                        ": " (e)
                                    }
                                }
                                ") "
                            }
                        }
                    }
                }
                @if !status.acknowledgements.is_empty() {
                    h2 { "Acknowledged" }
                    table id="acknowledgements" {
                        thead { tr { th { "Resource" } th { "Covers" } th { "Reason" } th { "Until" } } }
                        tbody {
                            @for a in &status.acknowledgements {
                                tr class=(if a.active { "acknowledged" } else { "expired" }) {
                                    td { code { (a.resource) } }
                                    td { (a.fields.join(", ")) @if let Some(r) = &a.rule { " rule " (r) } }
                                    td { (a.reason) }
                                    td class=(if a.active { "warn" } else { "bad" }) {
                                        (a.expires.as_deref().unwrap_or("?"))
                                        @if !a.active { " (expired)" }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { "Last hour" }
                (timeline(status, now))
                h2 { "Audit trail" }
                table id="audit" {
                    thead { tr { th { "When" } th { "Resource" } th { "Action" } th { "Cause" } th { "Trigger" } th { "Result" } th { "Fields" } } }
                    tbody {
                        @for a in status.audit.iter().rev() {
                            tr {
                                td { (a.at) } td { code { (a.resource) } } td { (a.action) }
                                td { (a.cause) } td { (a.trigger.as_str()) } td { (a.result) }
                                td { @for f in &a.fields {
                                    @if f.changed_secret { (f.path) ": changed" br; }
                                    @else { (f.path) ": " (f.before.as_deref().unwrap_or("(none)")) " → " (f.after.as_deref().unwrap_or("(none)")) br; }
                                } }
                            }
                        }
                    }
                }
                p { small { "Refreshes every " (REFRESH_SECONDS) " s. JSON: " a href="status" { "/status" } " · " a href="metrics" { "/metrics" } } }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        let status = Status {
            stack: Some("<script>alert(1)</script>".to_string()),
            ..Status::default()
        };
        let html = render(&status, SystemTime::now());
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
