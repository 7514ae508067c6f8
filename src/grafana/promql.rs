//! PromQL checks: the expression parses (promql-parser), every metric it selects is in the
//! catalogue, and every label it matches on, groups by or joins on exists on those series.
//! Pure: text in, findings out.

use super::catalogue::Catalogue;
use promql_parser::label::Matchers;
use promql_parser::parser::{self, Expr, LabelModifier};
use std::collections::BTreeSet;

/// One problem in an expression: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// Grafana's built-in interval variables, replaced by a duration before parsing (Grafana does
/// the same before it sends the query).
const INTERVAL_VARIABLES: [&str; 5] = [
    "$__rate_interval",
    "$__interval",
    "$__range",
    "${__rate_interval}",
    "${__interval}",
];

/// The expression as Prometheus would receive it from a dashboard: interval variables filled.
pub fn render(expr: &str) -> String {
    let mut out = expr.to_string();
    for v in INTERVAL_VARIABLES {
        out = out.replace(v, "5m");
    }
    out
}

/// Checks one expression; an empty result means it is fine.
pub fn check(expr: &str, catalogue: &Catalogue) -> Vec<Finding> {
    let rendered = render(expr);
    let ast = match parser::parse(&rendered) {
        Ok(ast) => ast,
        Err(e) => {
            let hint = if rendered.contains('$') {
                " (a dashboard variable may only appear inside a label matcher's quoted value, e.g. service_name=~\"$service\")"
            } else {
                ""
            };
            return vec![Finding {
                message: format!("PromQL does not parse: {}", e.trim()),
                fix: format!(
                    "correct the expression{hint}; `promtool query instant` or Grafana's Explore show the same error"
                ),
            }];
        }
    };
    let mut out = Vec::new();
    labels_of(&ast, catalogue, &mut out);
    out
}

/// The labels an expression's result carries (`None`: unknown, so anything is accepted), and
/// every problem found on the way down.
fn labels_of(e: &Expr, cat: &Catalogue, out: &mut Vec<Finding>) -> Option<BTreeSet<String>> {
    match e {
        Expr::VectorSelector(vs) => selector(vs.name.as_deref(), &vs.matchers, cat, out),
        Expr::MatrixSelector(ms) => selector(ms.vs.name.as_deref(), &ms.vs.matchers, cat, out),
        Expr::Paren(p) => labels_of(&p.expr, cat, out),
        Expr::Unary(u) => labels_of(&u.expr, cat, out),
        Expr::Subquery(s) => labels_of(&s.expr, cat, out),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Some(BTreeSet::new()),
        Expr::Extension(_) => None,
        Expr::Aggregate(a) => {
            let inner = labels_of(&a.expr, cat, out);
            if let Some(p) = &a.param {
                labels_of(p, cat, out);
            }
            let op = a.op.to_string();
            match &a.modifier {
                Some(LabelModifier::Include(ls)) => {
                    check_known(&ls.labels, inner.as_ref(), &format!("{op} by"), out);
                    Some(ls.labels.iter().cloned().collect())
                }
                Some(LabelModifier::Exclude(ls)) => {
                    check_known(&ls.labels, inner.as_ref(), &format!("{op} without"), out);
                    inner.map(|i| i.into_iter().filter(|l| !ls.labels.contains(l)).collect())
                }
                None if matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio") => {
                    inner
                }
                None => Some(BTreeSet::new()),
            }
        }
        Expr::Binary(b) => {
            let lhs = labels_of(&b.lhs, cat, out);
            let rhs = labels_of(&b.rhs, cat, out);
            let either = match (&lhs, &rhs) {
                (Some(l), Some(r)) => Some(l.union(r).cloned().collect::<BTreeSet<_>>()),
                _ => None,
            };
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                let (ls, what) = match m {
                    LabelModifier::Include(ls) => (ls, "on"),
                    LabelModifier::Exclude(ls) => (ls, "ignoring"),
                };
                check_known(&ls.labels, either.as_ref(), what, out);
            }
            match b.op.to_string().as_str() {
                "or" => either,
                _ if lhs.as_ref().is_some_and(BTreeSet::is_empty) => rhs,
                _ => lhs,
            }
        }
        Expr::Call(c) => {
            let mut first_vector = None;
            let mut strings = Vec::new();
            for arg in &c.args.args {
                if let Expr::StringLiteral(s) = arg.as_ref() {
                    strings.push(s.val.clone());
                    continue;
                }
                let ls = labels_of(arg, cat, out);
                if first_vector.is_none() && !matches!(arg.as_ref(), Expr::NumberLiteral(_)) {
                    first_vector = Some(ls);
                }
            }
            let inner = first_vector.flatten();
            match c.func.name {
                "vector" | "time" | "scalar" | "pi" => Some(BTreeSet::new()),
                "histogram_quantile" => {
                    if let Some(i) = &inner
                        && !i.contains("le")
                    {
                        out.push(Finding {
                            message: "histogram_quantile over series without an `le` label: the quantile is always NaN".to_string(),
                            fix: "aggregate the `_bucket` series and keep `le`: histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))".to_string(),
                        });
                    }
                    inner.map(|i| i.into_iter().filter(|l| l != "le").collect())
                }
                "label_replace" => {
                    // label_replace(v, dst, replacement, src, regex): src must exist, dst is new.
                    if let Some(src) = strings.get(2) {
                        check_known(
                            std::slice::from_ref(src),
                            inner.as_ref(),
                            "label_replace source",
                            out,
                        );
                    }
                    inner.map(|mut i| {
                        i.extend(strings.first().cloned());
                        i
                    })
                }
                "label_join" => inner.map(|mut i| {
                    i.extend(strings.first().cloned());
                    i
                }),
                // absent() returns the equality matchers of its selector as labels.
                "absent" | "absent_over_time" => None,
                _ => inner,
            }
        }
    }
}

fn selector(
    name: Option<&str>,
    matchers: &Matchers,
    cat: &Catalogue,
    out: &mut Vec<Finding>,
) -> Option<BTreeSet<String>> {
    let all = matchers
        .matchers
        .iter()
        .chain(matchers.or_matchers.iter().flatten());
    let name = name.map(str::to_string).or_else(|| {
        all.clone()
            .find(|m| m.name == "__name__" && m.op.to_string() == "=")
            .map(|m| m.value.clone())
    });
    let name = name?;
    let Some(series) = cat.series(&name) else {
        let names = cat.series_names();
        out.push(Finding {
            message: format!("metric `{name}` is not in the series catalogue"),
            fix: format!(
                "{}the catalogue (catalogue.yaml beside the dashboards) lists what the stack produces; add the family there, with its source, if it is new",
                super::did_you_mean(&name, names.iter().map(String::as_str))
            ),
        });
        return None;
    };
    for m in all {
        if m.name == "__name__" || series.labels.contains(&m.name) {
            continue;
        }
        out.push(Finding {
            message: format!(
                "`{name}` has no label `{}` (its labels: {})",
                m.name,
                join(&series.labels)
            ),
            fix: format!(
                "{}match on a label the series carries (source `{}` in the catalogue)",
                super::did_you_mean(&m.name, series.labels.iter().map(String::as_str)),
                series.family.source
            ),
        });
    }
    Some(series.labels)
}

fn check_known(
    labels: &[String],
    available: Option<&BTreeSet<String>>,
    what: &str,
    out: &mut Vec<Finding>,
) {
    let Some(available) = available else {
        return;
    };
    for l in labels {
        if !available.contains(l) {
            out.push(Finding {
                message: format!(
                    "`{what} ({l})`: no series under it has a label `{l}` (they have: {})",
                    join(available)
                ),
                fix: format!(
                    "{}group or join only on labels the series carry; see the catalogue",
                    super::did_you_mean(l, available.iter().map(String::as_str))
                ),
            });
        }
    }
}

fn join(labels: &BTreeSet<String>) -> String {
    if labels.is_empty() {
        "none".to_string()
    } else {
        labels.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Whether an expression selects error series (a `*status_code` matcher on 5xx or ERROR):
/// such a ratio is empty, "No data", while nothing fails, unless it falls back with `or vector(0)`.
pub fn selects_errors(expr: &str) -> bool {
    fn walk(e: &Expr) -> bool {
        let sel = |m: &Matchers| {
            m.matchers
                .iter()
                .chain(m.or_matchers.iter().flatten())
                .any(|m| {
                    m.name.ends_with("status_code")
                        && (m.value.starts_with('5')
                            || m.value.to_ascii_uppercase().contains("ERROR"))
                        && matches!(m.op.to_string().as_str(), "=" | "=~")
                })
        };
        match e {
            Expr::VectorSelector(vs) => sel(&vs.matchers),
            Expr::MatrixSelector(ms) => sel(&ms.vs.matchers),
            Expr::Paren(p) => walk(&p.expr),
            Expr::Unary(u) => walk(&u.expr),
            Expr::Subquery(s) => walk(&s.expr),
            Expr::Aggregate(a) => walk(&a.expr),
            Expr::Binary(b) => walk(&b.lhs) || walk(&b.rhs),
            Expr::Call(c) => c.args.args.iter().any(|a| walk(a)),
            _ => false,
        }
    }
    parser::parse(&render(expr)).is_ok_and(|ast| walk(&ast))
}

/// Every metric name an expression selects (after interval variables are filled).
pub fn metric_names(expr: &str) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::VectorSelector(vs) => out.extend(vs.name.clone()),
            Expr::MatrixSelector(ms) => out.extend(ms.vs.name.clone()),
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(ast) = parser::parse(&render(expr)) {
        walk(&ast, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grafana::{ContentFile, Sink};
    use std::path::PathBuf;

    fn cat() -> Catalogue {
        let text = "sources: {b: {description: d, labels: [job, service_name]}}\nfamilies:\n  - {name: req, type: histogram, source: b, labels: [code]}\n  - {name: conns, type: gauge, source: b}\n";
        let f = ContentFile::new("c".into(), PathBuf::from("c.yaml"), text);
        Catalogue::read(&f, &mut Sink::default()).unwrap()
    }

    fn messages(expr: &str) -> Vec<String> {
        check(expr, &cat()).into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn a_correct_expression_has_no_findings() {
        assert_eq!(
            messages(
                "histogram_quantile(0.9, sum by (le, service_name) (rate(req_bucket{code=~\"5..\"}[$__rate_interval])))"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(
                "(sum(rate(req_count{code=\"500\"}[5m])) / sum(rate(req_count[5m]))) or vector(0)"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_misspelt_metric_is_named_with_a_suggestion() {
        let f = check("rate(req_cuont[5m])", &cat());
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("`req_cuont`"));
        assert!(
            f[0].fix.contains("did you mean `req_count`"),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn a_label_the_series_lacks_is_rejected() {
        let m = messages("sum(conns{service=\"api\"})");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("no label `service`"), "{m:?}");
    }

    #[test]
    fn grouping_by_a_missing_label_is_rejected() {
        let m = messages("sum by (path) (conns)");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("sum by (path)"), "{m:?}");
    }

    #[test]
    fn histogram_quantile_needs_le() {
        let m = messages("histogram_quantile(0.9, sum(rate(req_bucket[5m])))");
        assert_eq!(m.len(), 1, "{m:?}");
    }

    #[test]
    fn a_syntax_error_is_one_finding() {
        let m = messages("sum(rate(req_count[5m])");
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("PromQL does not parse"), "{m:?}");
    }
}
