//! LogQL, Pyroscope and TraceQL checks that need no server: stream selectors use only labels
//! the log pipeline sets, the parser stage fits the source's line format (the seed's PR 9
//! found Faro's logfmt lines queried as JSON), and profile selectors use a known profile type
//! and labels. There is no LogQL parser crate; this reads selectors and stages only.

use super::catalogue::{Catalogue, LogSource};
use super::promql::Finding;
use std::collections::BTreeSet;

/// A label matcher inside `{…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// Value, unquoted.
    pub value: String,
}

/// Reads a selector body (`app="frontend", kind=~"a|b"`); `Err` says what is malformed.
pub fn parse_matchers(body: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(format!("expected a label name at `{rest}`"));
        }
        let name = rest[..name_len].to_string();
        rest = rest[name_len..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| format!("expected =, !=, =~ or !~ after `{name}`"))?;
        rest = rest[op.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '`')
            .ok_or_else(|| format!("the value of `{name}` must be quoted"))?;
        let end = closing_quote(&rest[1..], quote)
            .ok_or_else(|| format!("the value of `{name}` has no closing quote"))?;
        let value = rest[1..1 + end].to_string();
        rest = rest[end + 2..].trim_start();
        out.push(Matcher {
            name,
            op: op.to_string(),
            value,
        });
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(format!("expected `,` or `}}` at `{rest}`")),
        }
    }
    Ok(out)
}

fn closing_quote(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote == '"' {
            escaped = true;
        } else if c == quote {
            return Some(i);
        }
    }
    None
}

/// Splits a query into the bodies of its `{…}` selectors and the text outside strings and
/// selectors (where pipeline stages live).
fn scan(query: &str) -> Result<(Vec<String>, String), String> {
    let mut selectors = Vec::new();
    let mut outside = String::new();
    let mut chars = query.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '`' => {
                let end = closing_quote(&query[i + 1..], c)
                    .ok_or_else(|| "a string has no closing quote".to_string())?;
                while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + end) {
                    chars.next();
                }
                outside.push_str(" \"\" ");
            }
            '{' => {
                let body_start = i + 1;
                let mut end = None;
                let mut in_str: Option<char> = None;
                let mut escaped = false;
                for (j, d) in query[body_start..].char_indices() {
                    match in_str {
                        Some(_) if escaped => escaped = false,
                        Some('"') if d == '\\' => escaped = true,
                        Some(q) if d == q => in_str = None,
                        Some(_) => {}
                        None if d == '"' || d == '`' => in_str = Some(d),
                        None if d == '}' => {
                            end = Some(body_start + j);
                            break;
                        }
                        None => {}
                    }
                }
                let end = end.ok_or_else(|| "a `{` has no closing `}`".to_string())?;
                selectors.push(query[body_start..end].to_string());
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                outside.push_str(" {} ");
            }
            _ => outside.push(c),
        }
    }
    Ok((selectors, outside))
}

/// Checks a LogQL query against the catalogue's log sources.
pub fn check_logql(query: &str, cat: &Catalogue) -> Vec<Finding> {
    let mut out = Vec::new();
    let (selectors, outside) = match scan(query) {
        Ok(x) => x,
        Err(e) => {
            return vec![Finding {
                message: format!("LogQL does not parse: {e}"),
                fix: "correct the query; Grafana's Explore shows the same error".to_string(),
            }];
        }
    };
    if selectors.is_empty() {
        return vec![Finding {
            message: "LogQL query has no stream selector".to_string(),
            fix: "start with a selector on the pipeline's labels, e.g. {app=\"frontend\", kind=\"measurement\"}".to_string(),
        }];
    }
    let all_labels = cat.log_labels();
    let stages = parser_stages(&outside);
    for body in selectors {
        let matchers = match parse_matchers(&body) {
            Ok(m) => m,
            Err(e) => {
                out.push(Finding {
                    message: format!("stream selector {{{body}}} does not parse: {e}"),
                    fix: "write label matchers as name=\"value\", separated by commas".to_string(),
                });
                continue;
            }
        };
        if matchers
            .iter()
            .all(|m| m.op == "!=" || m.op == "!~" || m.value.is_empty())
        {
            out.push(Finding {
                message: format!(
                    "stream selector {{{body}}} has no positive matcher; Loki rejects it"
                ),
                fix: "add at least one `label=\"value\"` matcher".to_string(),
            });
        }
        let source = source_of(&matchers, cat);
        let labels: BTreeSet<String> = match source {
            Some(s) => s.labels.clone(),
            None => all_labels.clone(),
        };
        for m in &matchers {
            if !labels.contains(&m.name) {
                let whose = source
                    .map(|s| format!("the `{}` streams", s.name))
                    .unwrap_or_else(|| "the log pipeline".to_string());
                out.push(Finding {
                    message: format!(
                        "stream label `{}` is not set by {whose} (labels: {})",
                        m.name,
                        labels.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    fix: format!(
                        "{}select on a label Alloy sets (catalogue `logs:`), and filter on line fields after a parser stage instead",
                        super::did_you_mean(&m.name, labels.iter().map(String::as_str))
                    ),
                });
            }
        }
        if let Some(s) = source {
            for stage in &stages {
                if ["json", "logfmt"].contains(&stage.as_str()) && stage != s.format.stage() {
                    out.push(Finding {
                        message: format!(
                            "`| {stage}` on the `{}` streams, whose lines are {}: it extracts nothing",
                            s.name,
                            s.format.stage()
                        ),
                        fix: format!("parse with `| {}`", s.format.stage()),
                    });
                }
            }
        }
    }
    out
}

/// The source whose `match` pairs the selector names, if one.
fn source_of<'c>(matchers: &[Matcher], cat: &'c Catalogue) -> Option<&'c LogSource> {
    cat.logs.iter().find(|s| {
        !s.matches.is_empty()
            && s.matches.iter().all(|(k, v)| {
                matchers
                    .iter()
                    .any(|m| &m.name == k && m.op == "=" && &m.value == v)
            })
    })
}

/// `| json`, `| logfmt`, `| regexp`, `| pattern` stages (with strings and selectors removed).
fn parser_stages(outside: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in outside.split('|').skip(1) {
        if let Some(word) = part.split_whitespace().next()
            && ["json", "logfmt", "regexp", "pattern", "unpack"].contains(&word)
        {
            out.push(word.to_string());
        }
    }
    out
}

/// Checks a Pyroscope query: a known profile type, and a selector on known labels.
pub fn check_profile(profile_type: &str, selector: &str, cat: &Catalogue) -> Vec<Finding> {
    let mut out = Vec::new();
    if !cat.profile_types.contains(profile_type) {
        out.push(Finding {
            message: format!(
                "profile type `{profile_type}` is not one Pyroscope holds for this stack"
            ),
            fix: format!(
                "use one of: {} (catalogue `profiles.types`)",
                cat.profile_types
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let body = selector.trim();
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .unwrap_or(body);
    match parse_matchers(body) {
        Ok(ms) => {
            for m in ms {
                if !cat.profile_labels.contains(&m.name) {
                    out.push(Finding {
                        message: format!(
                            "profile label `{}` is not one the profiles carry",
                            m.name
                        ),
                        fix: format!(
                            "{}use one of: {}",
                            super::did_you_mean(
                                &m.name,
                                cat.profile_labels.iter().map(String::as_str)
                            ),
                            cat.profile_labels
                                .iter()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        Err(e) => out.push(Finding {
            message: format!("label selector `{selector}` does not parse: {e}"),
            fix: "write it as {service_name=\"backend\"}".to_string(),
        }),
    }
    out
}

/// Checks that a TraceQL query is at least well-formed: braces balance and each spanset
/// filter is non-empty (Tempo checks the rest).
pub fn check_traceql(query: &str) -> Vec<Finding> {
    match scan(query) {
        Ok((selectors, _)) if selectors.is_empty() => vec![Finding {
            message: "TraceQL query has no spanset filter `{…}`".to_string(),
            fix: "write a filter such as {resource.service.name=\"backend\" && status = error}"
                .to_string(),
        }],
        Ok(_) => Vec::new(),
        Err(e) => vec![Finding {
            message: format!("TraceQL does not parse: {e}"),
            fix: "balance the braces and quotes".to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grafana::{ContentFile, Sink};
    use std::path::PathBuf;

    fn cat() -> Catalogue {
        let text = "sources: {}\nfamilies: []\nlogs:\n  - {source: faro, description: d, match: {app: frontend}, format: logfmt, labels: [app, kind]}\n  - {source: otlp, description: d, match: {exporter: OTLP}, format: json, labels: [exporter, job, level]}\nprofiles: {types: [\"cpu:x\"], labels: [service_name]}\n";
        let f = ContentFile::new("c".into(), PathBuf::from("c.yaml"), text);
        Catalogue::read(&f, &mut Sink::default()).unwrap()
    }

    fn messages(q: &str) -> Vec<String> {
        check_logql(q, &cat())
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn faro_measurements_parsed_as_logfmt_pass() {
        assert_eq!(
            messages(
                "quantile_over_time(0.75, {app=\"frontend\", kind=\"measurement\"} | logfmt | lcp!=\"\" | unwrap lcp [5m]) by (app)"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn faro_lines_parsed_as_json_fail() {
        let m = messages("{app=\"frontend\"} | json | lcp > 0");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("`| json`"), "{m:?}");
    }

    #[test]
    fn a_label_no_pipeline_sets_fails() {
        let m = messages("{service=\"backend\"} |= \"error\"");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("`service`"), "{m:?}");
    }

    #[test]
    fn a_label_of_another_source_fails() {
        let m = messages("{app=\"frontend\", level=\"error\"}");
        assert_eq!(m.len(), 1, "{m:?}");
    }

    #[test]
    fn braces_inside_strings_are_not_selectors() {
        assert_eq!(
            messages("{app=\"frontend\"} | logfmt | line_format \"{{.lcp}}\""),
            Vec::<String>::new()
        );
    }

    #[test]
    fn profile_types_and_labels_are_checked() {
        assert!(check_profile("cpu:x", "{service_name=\"a\"}", &cat()).is_empty());
        assert_eq!(
            check_profile("memory:y", "{service=\"a\"}", &cat()).len(),
            2
        );
    }
}
