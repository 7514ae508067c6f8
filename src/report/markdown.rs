//! `--output markdown`: a plan (or what apply did) as a GitHub job summary. A heading naming
//! the stack and environment, a one-line verdict, a table of changes (resource, change, cause,
//! fields), a table of policy violations, then what could not be observed. Every cell is
//! escaped, so a `|` or a line break in a value never breaks a table; a secret is only
//! "value differs".

use super::{Outcome, count};
use crate::model::Desired;
use crate::plan::{Change, ConditionStatus, FieldChange, Plan};
use std::fmt::Write;

/// The report of `plan --output markdown`.
pub fn render(plan: &Plan, desired: &Desired) -> String {
    let mut out = heading("plan", desired);
    let icon = if !plan.violations.is_empty() || plan.is_incomplete() {
        "❌"
    } else if plan.has_changes() {
        "⚠️"
    } else {
        "✅"
    };
    let mut verdict = Vec::new();
    if !plan.violations.is_empty() {
        verdict.push(count(plan.violations.len(), "policy violation"));
    }
    if plan.has_changes() {
        verdict.push(format!("{} pending", count(plan.changes.len(), "change")));
    }
    if plan.is_incomplete() {
        verdict.push("incomplete: some live state could not be observed".to_string());
    }
    if verdict.is_empty() {
        out.push_str("✅ **No changes**: live state matches the manifests.\n");
    } else {
        let _ = writeln!(out, "{icon} **{}**", verdict.join(", "));
    }
    if plan.has_changes() {
        let _ = writeln!(out, "\n{}", plan.summary());
    }
    changes_table(&mut out, plan, None);
    details(&mut out, plan);
    out
}

/// The report of `apply --output markdown`: the plan it applied, each change with its result.
pub fn render_apply(plan: &Plan, desired: &Desired, outcomes: &[Outcome<'_>]) -> String {
    let mut out = heading("apply", desired);
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let verdict = if failed > 0 {
        format!(
            "❌ **Apply failed**: {failed} of {} failed",
            count(outcomes.len(), "change")
        )
    } else if plan.is_incomplete() {
        "❌ **Apply incomplete**: some live state could not be observed; the rest was applied"
            .to_string()
    } else if outcomes.is_empty() {
        "✅ **No changes**: live state matches the manifests".to_string()
    } else {
        format!(
            "✅ **Apply complete**: {} applied",
            count(outcomes.len(), "change")
        )
    };
    out.push_str(&verdict);
    if !plan.violations.is_empty() {
        let _ = write!(
            out,
            "; {} observed before applying",
            count(plan.violations.len(), "policy violation")
        );
    }
    out.push_str(".\n");
    changes_table(&mut out, plan, Some(outcomes));
    details(&mut out, plan);
    out
}

fn heading(command: &str, desired: &Desired) -> String {
    format!(
        "## stackwarden {command}: {} in environment {}\n\n",
        code(&format!("Stack/{}", desired.stack_name)),
        code(&desired.environment)
    )
}

/// The changes, one row each; with outcomes (apply), a result column.
fn changes_table(out: &mut String, plan: &Plan, outcomes: Option<&[Outcome<'_>]>) {
    if plan.changes.is_empty() {
        return;
    }
    out.push_str("\n### Changes\n\n");
    match outcomes {
        None => out.push_str("| resource | change | cause | fields |\n|---|---|---|---|\n"),
        Some(_) => {
            out.push_str("| resource | change | cause | fields | result |\n|---|---|---|---|---|\n")
        }
    }
    for change in &plan.changes {
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            code(&change.id.to_string()),
            change_cell(change),
            change.cause,
            change
                .fields
                .iter()
                .map(field_cell)
                .collect::<Vec<_>>()
                .join("<br>")
        );
        if let Some(outcomes) = outcomes {
            let _ = write!(out, " {} |", result_cell(change, outcomes));
        }
        out.push('\n');
    }
}

/// `` `~` update``, with the reason and the mode when they matter.
fn change_cell(change: &Change) -> String {
    let mut cell = format!("{} {}", code(change.action.symbol()), change.action.verb());
    if let Some(reason) = &change.reason {
        let _ = write!(cell, " ({})", text(reason));
    }
    if !change.mode.repairs() {
        let _ = write!(cell, " ({}: not applied)", change.mode);
    }
    cell
}

/// `` `path`: `before` → `after` ``; a secret only differs.
fn field_cell(field: &FieldChange) -> String {
    let path = code(&field.path);
    if field.sensitive {
        return format!("{path}: value differs");
    }
    match (&field.old, &field.new) {
        (Some(old), Some(new)) => format!("{path}: {} → {}", value(old), value(new)),
        (None, Some(new)) => format!("{path}: (none) → {}", value(new)),
        (Some(old), None) => format!("{path}: {} → (none)", value(old)),
        (None, None) => path,
    }
}

fn result_cell(change: &Change, outcomes: &[Outcome<'_>]) -> String {
    let outcome = outcomes
        .iter()
        .find(|o| o.change.id == change.id && o.change.action == change.action);
    match outcome {
        Some(Outcome { error: None, .. }) => "done".to_string(),
        Some(Outcome { error: Some(e), .. }) => format!("**failed**: {}", text(e)),
        None if !change.mode.repairs() => format!("not applied ({})", change.mode),
        None => "not attempted".to_string(),
    }
}

/// Violations, then errors, unobserved resources and conditions that do not hold.
fn details(out: &mut String, plan: &Plan) {
    if !plan.violations.is_empty() {
        out.push_str(
            "\n### Policy violations\n\n| rule | resource | field | message | fix |\n|---|---|---|---|---|\n",
        );
        for v in &plan.violations {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                code(v.rule),
                code(&v.resource),
                code(&v.path),
                text(&v.message),
                text(&v.fix)
            );
        }
    }
    if !plan.problems.is_empty() {
        out.push_str("\n### Errors\n\n");
        for p in &plan.problems {
            let _ = writeln!(out, "- {}", text(&p.to_string()));
        }
    }
    if !plan.unobserved.is_empty() {
        out.push_str("\n### Not observed\n\n");
        for u in &plan.unobserved {
            let _ = writeln!(
                out,
                "- {} ({}): {}",
                code(&u.id.to_string()),
                u.class.as_str(),
                text(&u.error)
            );
        }
    }
    let pending: Vec<_> = plan
        .conditions
        .iter()
        .filter(|c| c.status != ConditionStatus::True)
        .collect();
    if !pending.is_empty() {
        out.push_str("\n### Conditions\n\n");
        for c in pending {
            let _ = writeln!(
                out,
                "- {} {}={:?} {}: {}",
                code(&c.id.to_string()),
                text(&c.kind),
                c.status,
                text(&c.reason),
                text(&c.message)
            );
        }
    }
}

/// Prose for a cell or a list item: `|` escaped, line breaks as `<br>`, and HTML and
/// Markdown markup shown as written instead of interpreted.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => out.push_str("\\|"),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => out.push_str("<br>"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A value as code; `(empty)` when it is the empty string.
fn value(s: &str) -> String {
    if s.is_empty() {
        "(empty)".to_string()
    } else {
        code(s)
    }
}

/// A code span that survives a table: one span per line joined by `<br>` (a code span cannot
/// hold a line break), `|` escaped (GitHub unescapes it inside spans too), and fenced with
/// more backticks than the longest run inside.
fn code(s: &str) -> String {
    s.split('\n')
        .map(|line| code_line(line.strip_suffix('\r').unwrap_or(line)))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn code_line(line: &str) -> String {
    if line.is_empty() {
        return "` `".to_string();
    }
    let longest = line.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // A span whose content starts or ends with a backtick needs a space inside the fence
    // (which Markdown strips again).
    let pad = if line.starts_with('`') || line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", line.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Mode, ResourceId};
    use crate::plan::{Action, Cause, ErrorClass, Unobserved, Violation};
    use crate::report::tests::desired;

    fn change(kind: Kind, name: &str, action: Action) -> Change {
        Change::new(ResourceId::new(kind, name), action)
    }

    /// The rows of the table whose header starts with `header`.
    fn rows<'a>(report: &'a str, header: &str) -> Vec<&'a str> {
        report
            .lines()
            .skip_while(|l| !l.starts_with(header))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect()
    }

    /// Splits a row into cells as GitHub does (cmark-gfm): at every `|` that no backslash
    /// immediately precedes.
    fn cells(row: &str) -> Vec<String> {
        let inner = row.trim();
        let inner = inner.strip_prefix('|').unwrap_or(inner);
        let inner = inner.strip_suffix('|').unwrap_or(inner);
        let mut cells = vec![String::new()];
        let mut after_backslash = false;
        for c in inner.chars() {
            if c == '|' && !after_backslash {
                cells.push(String::new());
            } else if let Some(cell) = cells.last_mut() {
                cell.push(c);
            }
            after_backslash = c == '\\';
        }
        cells.iter().map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn a_plan_with_nothing_to_do_says_so_and_has_no_tables() {
        let report = render(&Plan::default(), &desired());
        assert!(
            report.starts_with("## stackwarden plan: `Stack/observability` in environment `ci`\n"),
            "{report}"
        );
        assert!(report.contains("✅ **No changes**"), "{report}");
        assert!(!report.contains('|'), "{report}");
    }

    #[test]
    fn pending_changes_are_counted_in_the_verdict_and_listed_one_row_each() {
        let plan = Plan {
            changes: vec![
                change(Kind::Bucket, "data", Action::Create),
                change(Kind::Container, "loki", Action::Update)
                    .caused_by(Cause::Drift)
                    .with_fields(vec![FieldChange::changed(
                        "spec.user",
                        "\"0\"",
                        "\"10001\"",
                    )]),
            ],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        assert!(report.contains("⚠️ **2 changes pending**"), "{report}");
        assert!(report.contains("Plan: 1 to create, 0 to adopt, 1 to update"));
        let rows = rows(&report, "| resource | change | cause | fields |");
        assert_eq!(
            rows,
            [
                "| `Bucket/data` | `+` create | missing |  |",
                "| `Container/loki` | `~` update | drift | `spec.user`: `\"0\"` → `\"10001\"` |",
            ]
        );
    }

    #[test]
    fn a_pipe_in_a_field_value_does_not_break_the_table() {
        let plan = Plan {
            changes: vec![
                change(Kind::ConfigFile, "alloy", Action::Update).with_fields(vec![
                    FieldChange::changed("spec.command", "a | b", "c || d"),
                ]),
            ],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        let rows = rows(&report, "| resource |");
        assert_eq!(rows.len(), 1, "{report}");
        let cells = cells(rows[0]);
        assert_eq!(cells.len(), 4, "{cells:?}");
        assert_eq!(
            cells[3], "`spec.command`: `a \\| b` → `c \\|\\| d`",
            "{report}"
        );
    }

    #[test]
    fn a_newline_in_a_value_becomes_a_line_break_inside_the_cell() {
        let plan = Plan {
            changes: vec![
                change(Kind::ConfigFile, "alloy", Action::Update).with_fields(vec![
                    FieldChange::changed("spec.content", "one\ntwo", "three\r\n"),
                ]),
            ],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        let rows = rows(&report, "| resource |");
        assert_eq!(rows.len(), 1, "{report}");
        assert!(
            rows[0].contains("`one`<br>`two` → `three`<br>` `"),
            "{report}"
        );
    }

    #[test]
    fn a_backtick_in_a_value_gets_a_longer_fence() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
    }

    #[test]
    fn a_secret_field_only_says_it_differs() {
        let plan = Plan {
            changes: vec![
                change(Kind::Parameter, "grafana-admin-password", Action::Update)
                    .with_fields(vec![FieldChange::secret("value")]),
            ],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        assert!(report.contains("| `value`: value differs |"), "{report}");
    }

    #[test]
    fn added_and_removed_values_show_none_on_the_missing_side() {
        assert_eq!(
            field_cell(&FieldChange::added("ingress[tcp/22]", "0.0.0.0/0")),
            "`ingress[tcp/22]`: (none) → `0.0.0.0/0`"
        );
        assert_eq!(
            field_cell(&FieldChange::removed("tags[team]", "")),
            "`tags[team]`: (empty) → (none)"
        );
    }

    #[test]
    fn observe_mode_changes_and_reasons_show_in_the_change_column() {
        let mut c = change(Kind::Instance, "host", Action::Replace).because("user data changed");
        c.mode = Mode::Observe;
        assert_eq!(
            change_cell(&c),
            "`-/+` replace (user data changed) (observe: not applied)"
        );
    }

    #[test]
    fn violations_get_their_own_table_and_a_failing_verdict() {
        let plan = Plan {
            violations: vec![Violation {
                world: None,
                rule: "no-open-ingress",
                resource: "SecurityGroup/observability".into(),
                path: "spec.ingress[2].from.cidr".into(),
                message: "allows ingress from the whole internet (0.0.0.0/0)".into(),
                fix: "allow a security group | not a <CIDR>".into(),
            }],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        assert!(report.contains("❌ **1 policy violation**"), "{report}");
        let rows = rows(&report, "| rule | resource | field | message | fix |");
        assert_eq!(rows.len(), 1, "{report}");
        let cells = cells(rows[0]);
        assert_eq!(
            cells,
            [
                "`no-open-ingress`",
                "`SecurityGroup/observability`",
                "`spec.ingress[2].from.cidr`",
                "allows ingress from the whole internet (0.0.0.0/0)",
                "allow a security group \\| not a &lt;CIDR&gt;",
            ]
        );
    }

    #[test]
    fn markdown_in_a_message_is_shown_as_written() {
        assert_eq!(
            text("*bold* _it_ `code` [link](x) a\\b"),
            "\\*bold\\* \\_it\\_ \\`code\\` \\[link\\](x) a\\\\b"
        );
        assert_eq!(text("line\r\nnext\nlast"), "line<br>next<br>last");
    }

    #[test]
    fn errors_and_unobserved_resources_are_listed_and_make_the_plan_incomplete() {
        let plan = Plan {
            problems: vec![crate::plan::Problem::Unreachable(
                crate::plan::ProviderFailure::new(
                    crate::plan::World::Aws,
                    crate::plan::ErrorClass::Transient,
                    "connection refused",
                ),
            )],
            unobserved: vec![Unobserved {
                id: ResourceId::new(Kind::Bucket, "data"),
                class: ErrorClass::Transient,
                error: "GetBucketEncryption timed out".into(),
            }],
            ..Plan::default()
        };
        let report = render(&plan, &desired());
        assert!(report.contains("❌ **incomplete"), "{report}");
        assert!(
            report.contains("### Errors\n\n- aws: connection refused\n"),
            "{report}"
        );
        assert!(
            report.contains(
                "### Not observed\n\n- `Bucket/data` (transient): GetBucketEncryption timed out\n"
            ),
            "{report}"
        );
    }

    #[test]
    fn apply_reports_each_change_with_its_result() {
        let done = change(Kind::Bucket, "data", Action::Create);
        let failed = change(Kind::SecurityGroup, "observability", Action::Update);
        let mut watched = change(Kind::Container, "loki", Action::Update);
        watched.mode = Mode::Observe;
        let plan = Plan {
            changes: vec![done.clone(), failed.clone(), watched],
            ..Plan::default()
        };
        let outcomes = [
            Outcome {
                change: &done,
                error: None,
            },
            Outcome {
                change: &failed,
                error: Some("InvalidPermission.Duplicate"),
            },
        ];
        let report = render_apply(&plan, &desired(), &outcomes);
        assert!(report.starts_with("## stackwarden apply: "), "{report}");
        assert!(
            report.contains("❌ **Apply failed**: 1 of 2 changes failed."),
            "{report}"
        );
        let results: Vec<String> = rows(&report, "| resource | change | cause | fields | result |")
            .iter()
            .map(|r| cells(r)[4].clone())
            .collect();
        assert_eq!(
            results,
            [
                "done",
                "**failed**: InvalidPermission.Duplicate",
                "not applied (observe)"
            ]
        );
    }
}
