//! Grafana content specifications: the shipped dashboards and alerting validate; every broken
//! file in tests/fixtures/grafana is rejected with its file, line, JSON pointer or YAML path,
//! message and fix; the SLO burn-rate rules, and the host and stackwarden rules, behave under
//! `promtool test rules` (the rule file is generated from alerting/rules.yaml); and every
//! dashboard panel query returns data from a real Prometheus (Debian `prometheus`, loopback)
//! loaded with the sample in tests/fixtures/grafana-sample. LogQL, TraceQL and profile
//! queries have no server here: `validate` checks them against the catalogue instead.

use crate::support::cli::Cli;
use crate::support::files::{copy_dir, repo};
use serde_json::{Value, json};
use stackwarden::grafana::catalogue::Catalogue;
use stackwarden::grafana::{ContentFile, Sink, promql};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn stackwarden(dir: &Path, args: &[&str]) -> Output {
    Cli::new(args)
        .dir(dir)
        .env_remove("STACKWARDEN_ENV")
        .output()
}

/// A temp copy of everything `validate` reads: manifests and the content they source.
fn repo_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for dir in ["manifests", "dashboards", "alerting", "config"] {
        copy_dir(&repo().join(dir), &tmp.path().join(dir));
    }
    tmp
}

// ---------------------------------------------------------------------------------------------
// The broken-file corpus.

/// Where a fixture goes in the repository copy.
#[derive(Clone, Copy)]
enum Place {
    /// Shipped as one more dashboard (ConfigFile/case at grafana/dashboards/case.json).
    Dashboard,
    /// Shipped as one more alerting file (ConfigFile/case).
    Alerting,
    /// Replaces a shipped file.
    Replace(&'static str),
}

struct Case {
    fixture: &'static str,
    place: Place,
    /// `file:line:col: resource path: message` (a prefix of the diagnostic's first line).
    expect: &'static str,
    /// A fragment of its `fix:` line.
    fix: &'static str,
    /// Whether it must be the only problem reported.
    alone: bool,
}

const fn case(
    fixture: &'static str,
    place: Place,
    expect: &'static str,
    fix: &'static str,
) -> Case {
    Case {
        fixture,
        place,
        expect,
        fix,
        alone: true,
    }
}

const CASES: &[Case] = &[
    // Dashboards: the seed's PR 9 mistakes first.
    case(
        "dashboard-service-label.json",
        Place::Dashboard,
        "case/dashboard-service-label.json:17:11: ConfigFile/case /panels/0/targets/0/expr: `http_server_duration_milliseconds_count` has no label `service`",
        "did you mean `service_name`?",
    ),
    case(
        "dashboard-group-by-missing-label.json",
        Place::Dashboard,
        "case/dashboard-group-by-missing-label.json:17:11: ConfigFile/case /panels/0/targets/0/expr: `sum by (path)`: no series under it has a label `path`",
        "group or join only on labels the series carry",
    ),
    case(
        "dashboard-error-rate-without-fallback.json",
        Place::Dashboard,
        "case/dashboard-error-rate-without-fallback.json:17:11: ConfigFile/case /panels/0/targets/0/expr: an error rate without a fallback shows \"No data\"",
        "append `or vector(0)`",
    ),
    case(
        "dashboard-faro-logs-as-json.json",
        Place::Dashboard,
        "case/dashboard-faro-logs-as-json.json:17:11: ConfigFile/case /panels/0/targets/0/expr: `| json` on the `faro` streams, whose lines are logfmt",
        "parse with `| logfmt`",
    ),
    case(
        "dashboard-profile-type-guessed.json",
        Place::Dashboard,
        "case/dashboard-profile-type-guessed.json:18:11: ConfigFile/case /panels/0/targets/0/profileTypeId: profile type `memory:alloc_space:bytes:space:bytes` is not one Pyroscope holds",
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    ),
    case(
        "dashboard-metric-typo.json",
        Place::Dashboard,
        "case/dashboard-metric-typo.json:17:11: ConfigFile/case /panels/0/targets/0/expr: metric `http_server_duration_miliseconds_count` is not in the series catalogue",
        "did you mean `http_server_duration_milliseconds_count`?",
    ),
    case(
        "dashboard-label-typo.json",
        Place::Dashboard,
        "case/dashboard-label-typo.json:17:11: ConfigFile/case /panels/0/targets/0/expr: `http_server_duration_milliseconds_count` has no label `http_status`",
        "did you mean `http_status_code`?",
    ),
    case(
        "dashboard-promql-syntax.json",
        Place::Dashboard,
        "case/dashboard-promql-syntax.json:17:11: ConfigFile/case /panels/0/targets/0/expr: PromQL does not parse: unclosed left parenthesis",
        "correct the expression",
    ),
    case(
        "dashboard-histogram-quantile-without-le.json",
        Place::Dashboard,
        "case/dashboard-histogram-quantile-without-le.json:17:11: ConfigFile/case /panels/0/targets/0/expr: histogram_quantile over series without an `le` label",
        "keep `le`",
    ),
    case(
        "dashboard-loki-label-not-set.json",
        Place::Dashboard,
        "case/dashboard-loki-label-not-set.json:17:11: ConfigFile/case /panels/0/targets/0/expr: stream label `container` is not set by the log pipeline",
        "select on a label Alloy sets",
    ),
    case(
        "dashboard-datasource-not-provisioned.json",
        Place::Dashboard,
        "case/dashboard-datasource-not-provisioned.json:12:9: ConfigFile/case /panels/0/datasource/uid: datasource uid `prometheus` is not provisioned",
        "use a provisioned uid: loki, mimir, pyroscope, tempo",
    ),
    case(
        "dashboard-datasource-type-mismatch.json",
        Place::Dashboard,
        "case/dashboard-datasource-type-mismatch.json:11:9: ConfigFile/case /panels/0/datasource/type: datasource `mimir` is of type `prometheus`, not `loki`",
        "set \"type\": \"prometheus\"",
    ),
    case(
        "dashboard-datasource-by-name.json",
        Place::Dashboard,
        "case/dashboard-datasource-by-name.json:10:7: ConfigFile/case /panels/0/datasource: refers to datasource `Mimir` by name",
        "uids are fixed in the provisioning",
    ),
    case(
        "dashboard-panel-without-datasource.json",
        Place::Dashboard,
        "case/dashboard-panel-without-datasource.json:7:7: ConfigFile/case /panels/0/datasource: the panel has queries but names no datasource",
        "naming a provisioned datasource",
    ),
    case(
        "dashboard-duplicate-panel-id.json",
        Place::Dashboard,
        "case/dashboard-duplicate-panel-id.json:37:7: ConfigFile/case /panels/2/id: panel id 2 is also the id of the panel at /panels/1",
        "unique in this dashboard",
    ),
    case(
        "dashboard-duplicate-uid.json",
        Place::Dashboard,
        "dashboards/golden-signals-overview.json:2:3: ConfigFile/dashboard-golden-signals /uid: uid `golden-signals` is also the uid of case/dashboard-duplicate-uid.json",
        "give every dashboard its own uid",
    ),
    case(
        "dashboard-missing-uid.json",
        Place::Dashboard,
        "case/dashboard-missing-uid.json:1:1: ConfigFile/case /uid: the dashboard has no fixed uid",
        "set \"uid\"",
    ),
    case(
        "dashboard-broken-link.json",
        Place::Dashboard,
        "case/dashboard-broken-link.json:9:7: ConfigFile/case /links/0/url: links to dashboard uid `golden-signal`, which is not shipped",
        "did you mean `golden-signals`?",
    ),
    case(
        "dashboard-variable-label-typo.json",
        Place::Dashboard,
        "case/dashboard-variable-label-typo.json:15:11: ConfigFile/case /templating/list/0/query/query: `http_server_duration_milliseconds_count` has no label `service`: the variable would be empty",
        "did you mean `service_name`?",
    ),
    case(
        "dashboard-json-syntax.json",
        Place::Dashboard,
        "case/dashboard-json-syntax.json:5:1: ConfigFile/case: JSON syntax error: trailing comma",
        "correct the JSON at this position",
    ),
    // Alerting.
    case(
        "alerting-duplicate-rule-uid.yaml",
        Place::Alerting,
        "alerting/rules.yaml:17:9: ConfigFile/grafana-alert-rules groups[0].rules[0].uid: rule uid `slo-availability-page-fast` is also used at case/alerting-duplicate-rule-uid.yaml groups[0].rules[0]",
        "give every rule its own uid",
    ),
    case(
        "alerting-condition-names-no-query.yaml",
        Place::Alerting,
        "case/alerting-condition-names-no-query.yaml:11:9: ConfigFile/case groups[0].rules[0].condition: condition `B` is not the refId of any query",
        "set condition to one of: A, C",
    ),
    case(
        "alerting-for-longer-than-a-day.yaml",
        Place::Alerting,
        "case/alerting-for-longer-than-a-day.yaml:12:9: ConfigFile/case groups[0].rules[0].for: `for: 3d` is longer than a day",
        "keep `for` to minutes",
    ),
    case(
        "alerting-for-not-a-duration.yaml",
        Place::Alerting,
        "case/alerting-for-not-a-duration.yaml:12:9: ConfigFile/case groups[0].rules[0].for: `for: 5 minutes` is not a duration",
        "write it like 5m",
    ),
    case(
        "alerting-for-shorter-than-interval.yaml",
        Place::Alerting,
        "case/alerting-for-shorter-than-interval.yaml:12:9: ConfigFile/case groups[0].rules[0].for: `for: 30s` is shorter than the group's evaluation interval",
        "at least the interval",
    ),
    case(
        "alerting-interval-too-short.yaml",
        Place::Alerting,
        "case/alerting-interval-too-short.yaml:7:5: ConfigFile/case groups[0].interval: evaluation interval 1s is outside 10s..1h",
        "evaluate every 1m",
    ),
    case(
        "alerting-threshold-range-one-param.yaml",
        Place::Alerting,
        "case/alerting-threshold-range-one-param.yaml:31:52: ConfigFile/case groups[0].rules[0].data[1].model.conditions[0].evaluator.params: `within_range` takes 2 finite numbers",
        "params: [low, high]",
    ),
    case(
        "alerting-severity-not-routed.yaml",
        Place::Alerting,
        "case/alerting-severity-not-routed.yaml:14:11: ConfigFile/case groups[0].rules[0].labels.severity: severity `page` is not one the policies route",
        "critical, warning, info",
    ),
    case(
        "alerting-metric-typo.yaml",
        Place::Alerting,
        "case/alerting-metric-typo.yaml:23:15: ConfigFile/case groups[0].rules[0].data[0].model.expr: metric `stackwarden_last_sucess_timestamp_seconds` is not in the series catalogue",
        "did you mean `stackwarden_last_success_timestamp_seconds`?",
    ),
    case(
        "alerting-label-typo.yaml",
        Place::Alerting,
        "case/alerting-label-typo.yaml:23:15: ConfigFile/case groups[0].rules[0].data[0].model.expr: `sum by (rules)`: no series under it has a label `rules`",
        "did you mean `rule`?",
    ),
    case(
        "alerting-datasource-not-provisioned.yaml",
        Place::Alerting,
        "case/alerting-datasource-not-provisioned.yaml:19:13: ConfigFile/case groups[0].rules[0].data[0].datasourceUid: datasource uid `prometheus` is not provisioned",
        "or __expr__ for expressions",
    ),
    case(
        "alerting-literal-slack-url.yaml",
        Place::Alerting,
        "case/alerting-literal-slack-url.yaml:10:11: ConfigFile/case contactPoints[0].receivers[0].settings.url: the slack `url` is written into the file; it is a secret",
        "set `url: $GRAFANA_SLACK_URL`",
    ),
    case(
        "alerting-webhook-without-url.yaml",
        Place::Alerting,
        "case/alerting-webhook-without-url.yaml:9:9: ConfigFile/case contactPoints[0].receivers[0].settings: a webhook receiver needs `url`",
        "set settings.url",
    ),
    case(
        "alerting-rule-names-unknown-contact-point.yaml",
        Place::Alerting,
        "case/alerting-rule-names-unknown-contact-point.yaml:16:11: ConfigFile/case groups[0].rules[0].notification_settings.receiver: names contact point `team-pager`, which is not declared",
        "name a declared contact point",
    ),
    case(
        "alerting-label-template-interpolated.yaml",
        Place::Alerting,
        "case/alerting-label-template-interpolated.yaml:16:11: ConfigFile/case groups[0].rules[0].labels.resource: label `resource` contains `$`",
        "write `$$` for a literal `$`",
    ),
    case(
        "alerting-unknown-top-level-key.yaml",
        Place::Alerting,
        "case/alerting-unknown-top-level-key.yaml:3:1: ConfigFile/case contactpoints: unknown top-level key `contactpoints`",
        "did you mean `contactPoints`?",
    ),
    Case {
        fixture: "policies-route-to-undeclared-contact-point.yaml",
        place: Place::Replace("alerting/policies.yaml"),
        expect: "alerting/policies.yaml:8:9: ConfigFile/grafana-policies policies[0].routes[0].receiver: routes to contact point `alertmanagr`, which is not declared",
        fix: "did you mean `alertmanager`?",
        // Every critical rule is then routed nowhere: each is reported too.
        alone: false,
    },
    // Provisioning.
    case(
        "datasources-traces-to-logs-wrong-type.yaml",
        Place::Replace("config/grafana/datasources.yaml"),
        "config/grafana/datasources.yaml:18:9: ConfigFile/grafana-datasources datasources[2].jsonData.tracesToLogsV2.datasourceUid: links to `mimir`, a prometheus datasource, where a loki one is needed",
        "point it at the loki datasource",
    ),
    case(
        "grafana-ini-wrong-port.ini",
        Place::Replace("config/grafana/grafana.ini"),
        "config/grafana/grafana.ini:6:1: ConfigFile/grafana-ini [server] http_port: is `3000`",
        "set `http_port = 3001` in [server]",
    ),
    case(
        "grafana-ini-anonymous-admin.ini",
        Place::Replace("config/grafana/grafana.ini"),
        "config/grafana/grafana.ini:21:1: ConfigFile/grafana-ini [auth.anonymous] org_role: is `Admin`",
        "set `org_role = Viewer`",
    ),
    case(
        "grafana-ini-unified-alerting-off.ini",
        Place::Replace("config/grafana/grafana.ini"),
        "config/grafana/grafana.ini:28:1: ConfigFile/grafana-ini [unified_alerting] enabled: is `false`",
        "set `enabled = true` in [unified_alerting]",
    ),
    // The policy catches a password in grafana.ini while the manifests load, before Grafana checks run.
    case(
        "grafana-ini-admin-password.ini",
        Place::Replace("config/grafana/grafana.ini"),
        "manifests/host/grafana-content.yaml:9:1: ConfigFile/grafana-ini spec.content: sets a literal Grafana admin_password [policy: no-default-grafana-password]",
        "remove admin_password from the file",
    ),
];

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/grafana")
}

/// Runs `validate --env dev` on the repository with the case's fixture in place.
fn validate_case(case: &Case) -> Output {
    let tmp = repo_copy();
    let fixture = fixtures().join(case.fixture);
    let host_path = match case.place {
        Place::Dashboard => Some("grafana/dashboards/case.json"),
        Place::Alerting => Some("grafana/provisioning/alerting/case.yaml"),
        Place::Replace(target) => {
            std::fs::copy(&fixture, tmp.path().join(target)).expect("replace file");
            None
        }
    };
    if let Some(host_path) = host_path {
        copy_dir_file(&fixture, &tmp.path().join("case").join(case.fixture));
        std::fs::write(
            tmp.path().join("manifests/host/case.yaml"),
            format!(
                "apiVersion: stackwarden.io/v1\nkind: ConfigFile\nmetadata:\n  name: case\nspec:\n  path: {host_path}\n  source: ../../case/{}\n  owner: 10001\n  group: 10001\n",
                case.fixture
            ),
        )
        .expect("write case manifest");
    }
    stackwarden(tmp.path(), &["validate", "--env", "dev"])
}

fn copy_dir_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("create dir");
    std::fs::copy(from, to).expect("copy fixture");
}

#[test]
fn every_broken_grafana_file_is_rejected_with_its_location_path_and_fix() {
    let mut failures = Vec::new();
    for case in CASES {
        let out = validate_case(case);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = stderr.lines().collect();
        let found = lines.iter().position(|l| l.starts_with(case.expect));
        let problem = if out.status.code() != Some(1) {
            Some(format!("exit {:?}, not 1", out.status.code()))
        } else if let Some(i) = found {
            let fix = lines.get(i + 1).copied().unwrap_or("");
            if !(fix.trim_start().starts_with("fix: ") && fix.contains(case.fix)) {
                Some(format!(
                    "its fix line is `{fix}`, expected it to contain `{}`",
                    case.fix
                ))
            } else if case.alone && !stderr.contains("\n1 problem found") {
                Some("more than the one expected problem was reported".to_string())
            } else {
                None
            }
        } else {
            Some(format!("no diagnostic starts with `{}`", case.expect))
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}\n--- stderr:\n{stderr}", case.fixture));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_corpus_has_twenty_or_more_cases_and_each_fixture_is_one() {
    let mut files: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    let mut named: Vec<String> = CASES.iter().map(|c| c.fixture.to_string()).collect();
    named.sort();
    assert_eq!(
        files, named,
        "every fixture file has exactly one case, and every case a file"
    );
    assert!(CASES.len() >= 20, "{} cases", CASES.len());
}

#[test]
fn a_secret_written_into_a_contact_point_is_never_echoed() {
    let case = CASES
        .iter()
        .find(|c| c.fixture == "alerting-literal-slack-url.yaml")
        .expect("the literal-secret case");
    let out = validate_case(case);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        !all.contains("not-a-real-secret"),
        "the value leaked: {all}"
    );
    assert!(!all.contains("hooks.slack.com"), "the value leaked: {all}");
}

/// Wiring outside the content (the grafana Container's mounts and environment) is a warning:
/// the content is valid, but Grafana would not see the file or would get an empty setting.
#[test]
fn content_grafana_cannot_see_is_a_warning_naming_the_mount_and_variable_to_add() {
    let tmp = repo_copy();
    std::fs::create_dir_all(tmp.path().join("case")).expect("case dir");
    std::fs::copy(
        repo().join("dashboards/stackwarden.json"),
        tmp.path().join("case/extra.json"),
    )
    .expect("copy dashboard");
    let extra = std::fs::read_to_string(tmp.path().join("case/extra.json"))
        .expect("read")
        .replace("\"uid\": \"stackwarden\"", "\"uid\": \"extra\"");
    std::fs::write(tmp.path().join("case/extra.json"), extra).expect("write");
    std::fs::write(
        tmp.path().join("case/pager.yaml"),
        "apiVersion: 1\ncontactPoints:\n  - orgId: 1\n    name: pager\n    receivers:\n      - uid: pager\n        type: webhook\n        settings:\n          url: $CASE_PAGER_URL\n",
    )
    .expect("write contact point");
    std::fs::write(
        tmp.path().join("manifests/host/case.yaml"),
        "apiVersion: stackwarden.io/v1\nkind: ConfigFile\nmetadata:\n  name: case-dashboard\nspec:\n  path: grafana/dashboards/extra.json\n  source: ../../case/extra.json\n  owner: 10001\n  group: 10001\n---\napiVersion: stackwarden.io/v1\nkind: ConfigFile\nmetadata:\n  name: case-pager\nspec:\n  path: grafana/provisioning/alerting/pager.yaml\n  source: ../../case/pager.yaml\n  owner: 10001\n  group: 10001\n",
    )
    .expect("write case manifest");
    let out = stackwarden(tmp.path(), &["validate", "--env", "dev"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: manifests/host/case.yaml:4:3: ConfigFile/case-dashboard spec.path: Container/grafana does not mount it")
            && stderr.contains("fix: add `- { configFile: case-dashboard, target: /var/lib/grafana/dashboards/extra.json, readOnly: true }` to Container/grafana spec.mounts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: case/pager.yaml:9:11: ConfigFile/case-pager contactPoints[0].receivers[0].settings.url: expands $CASE_PAGER_URL from Grafana's environment, which Container/grafana does not set"),
        "{stderr}"
    );
}

#[test]
fn shipped_grafana_content_validates_for_every_environment() {
    for env in ["dev", "staging", "prod", "local"] {
        let out = stackwarden(&repo(), &["validate", "--env", env]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{env}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("grafana: 9 dashboards (") && stdout.contains("15 alert rules"),
            "{env}: {stdout}"
        );
    }
}

/// Every dashboard and alerting file in the repository is delivered to the host by a
/// ConfigFile under the paths the grafana container mounts, so none is forgotten.
#[test]
fn every_dashboard_and_alerting_file_is_delivered_by_a_config_file() {
    let loaded = stackwarden::manifest::load(&repo().join("manifests"), Some("local"))
        .unwrap_or_else(|e| panic!("{e}"));
    let delivered: BTreeMap<String, String> = loaded
        .desired
        .config_files()
        .filter_map(|(_, f)| {
            let src = f.source.as_deref()?;
            let name = Path::new(src).file_name()?.to_string_lossy().to_string();
            Some((name, f.path.clone()))
        })
        .collect();
    for (dir, ext, host_dir) in [
        ("dashboards", "json", stackwarden::grafana::DASHBOARDS_DIR),
        ("alerting", "yaml", stackwarden::grafana::ALERTING_DIR),
    ] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("content dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != ext) {
                continue;
            }
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            let host = delivered
                .get(&name)
                .unwrap_or_else(|| panic!("{dir}/{name} is not the source of any ConfigFile"));
            assert!(
                host.starts_with(host_dir),
                "{dir}/{name} goes to {host}, not under {host_dir}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// promtool: the shipped SLO rules, unit-tested.

fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: run scripts/dev-env up (it installs Debian's prometheus package)")
    })
}

/// One shipped rule, as Prometheus needs it: the same expression, `for` and labels.
struct ShippedRule {
    group: String,
    uid: String,
    expr: String,
    for_: String,
    labels: BTreeMap<String, String>,
}

fn shipped_rules() -> Vec<ShippedRule> {
    let text = std::fs::read_to_string(repo().join("alerting/rules.yaml")).expect("rules.yaml");
    let doc = stackwarden::manifest::yaml::parse(&text).expect("rules.yaml parses");
    let mut out = Vec::new();
    for group in doc[0].value["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let query = rule["data"]
                .as_array()
                .expect("data")
                .iter()
                .find(|d| d["datasourceUid"] == "mimir")
                .expect("a Mimir query");
            out.push(ShippedRule {
                group: group["name"].as_str().expect("group name").to_string(),
                uid: rule["uid"].as_str().expect("uid").to_string(),
                expr: query["model"]["expr"].as_str().expect("expr").to_string(),
                for_: rule["for"].as_str().unwrap_or("0s").to_string(),
                labels: rule["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// A Prometheus rule file holding the shipped rules of `group` (all groups when `None`):
/// JSON, which is YAML to Prometheus.
fn prometheus_rule_file(group: Option<&str>) -> Value {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in shipped_rules()
        .into_iter()
        .filter(|r| group.is_none_or(|g| r.group == g))
    {
        groups.entry(r.group).or_default().push(json!({
            "alert": r.uid, "expr": r.expr, "for": r.for_, "labels": r.labels,
        }));
    }
    json!({"groups": groups.into_iter().map(|(name, rules)| json!({"name": name, "interval": "1m", "rules": rules})).collect::<Vec<_>>()})
}

#[test]
fn every_shipped_rule_expression_passes_promtool_check_rules() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("rules.json");
    std::fs::write(&file, prometheus_rule_file(None).to_string()).expect("write rules");
    let out = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Per-minute values of a counter that grows by each segment's per-minute increment for its
/// number of minutes: `[(1000.0, 60)]` is an hour at 1000 a minute.
fn counter(segments: &[(f64, usize)]) -> String {
    let mut v = 0.0;
    let mut out = vec!["0".to_string()];
    for &(inc, minutes) in segments {
        for _ in 0..minutes {
            v += inc;
            out.push(format!("{v}"));
        }
    }
    out.join(" ")
}

const REQUESTS: &str = "http_server_duration_milliseconds";

/// Requests per minute, healthy and failing, as the backend's series: the 200s, the 500s,
/// and the `le="500"` bucket (fast requests) over all of them.
fn traffic(segments: &[(f64, f64, f64, usize)]) -> Vec<Value> {
    traffic_of("backend", segments)
}

fn traffic_of(service: &str, segments: &[(f64, f64, f64, usize)]) -> Vec<Value> {
    // (total per minute, error fraction, slow fraction, minutes)
    let ok: Vec<(f64, usize)> = segments
        .iter()
        .map(|&(t, e, _, m)| (t * (1.0 - e), m))
        .collect();
    let err: Vec<(f64, usize)> = segments.iter().map(|&(t, e, _, m)| (t * e, m)).collect();
    let fast: Vec<(f64, usize)> = segments
        .iter()
        .map(|&(t, _, s, m)| (t * (1.0 - s), m))
        .collect();
    let l = format!(r#"service_name="{service}""#);
    vec![
        json!({"series": format!(r#"{REQUESTS}_count{{{l}, http_status_code="200"}}"#), "values": counter(&ok)}),
        json!({"series": format!(r#"{REQUESTS}_count{{{l}, http_status_code="500"}}"#), "values": counter(&err)}),
        json!({"series": format!(r#"{REQUESTS}_bucket{{{l}, le="500"}}"#), "values": counter(&fast)}),
    ]
}

fn page(slo: &str, window: &str) -> Value {
    json!([{"exp_labels": {"severity": "critical", "slo": slo, "window": window, "service_name": "backend"}}])
}

fn none() -> Value {
    json!([])
}

#[test]
fn slo_burn_rate_rules_page_at_14_4x_stay_quiet_at_1x_and_clear_when_the_burn_stops() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("rules.json"),
        prometheus_rule_file(Some("slo-burn-rate")).to_string(),
    )
    .expect("write rules");
    let at = |t: &str, alert: &str, exp: Value| json!({"eval_time": t, "alertname": alert, "exp_alerts": exp});
    let tests = json!({
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [
            {
                // An hour healthy, then errors at 15x the budget rate (1.5% of requests, just
                // over 14.4x) for two hours, then healthy again. The 1h window reaches 14.4x
                // after 57.6 minutes of burn; `for: 2m` then fires it.
                "name": "availability: a 14.4x burn pages within its hour, and the page clears when the burn stops",
                "interval": "1m",
                "input_series": traffic(&[(1000.0, 0.0, 0.0, 60), (1000.0, 0.015, 0.0, 120), (1000.0, 0.0, 0.0, 60)]),
                "alert_rule_test": [
                    at("90m", "slo-availability-page-fast", none()),
                    at("115m", "slo-availability-page-fast", none()),
                    at("122m", "slo-availability-page-fast", page("availability", "1h")),
                    at("175m", "slo-availability-page-fast", page("availability", "1h")),
                    // Five minutes after the burn stops the short window is clean.
                    at("188m", "slo-availability-page-fast", none()),
                    at("122m", "slo-latency-page-fast", none()),
                ],
            },
            {
                // Two services for three days (one test, since promtool evaluates every minute
                // of it): `backend` fails at exactly the budget rate (0.1%), so its budget lasts
                // exactly the 30 days and nothing pages; not even the 1x ticket, which needs
                // more than 1x. `api` burns at 1.5x: a ticket, never a page.
                "name": "availability: a 1x burn never pages; a slow 1.5x burn opens a ticket only",
                "interval": "1m",
                "input_series": traffic(&[(1000.0, 0.001, 0.0, 4380)]).into_iter()
                    .chain(traffic_of("api", &[(1000.0, 0.0015, 0.0, 4380)])).collect::<Vec<_>>(),
                "alert_rule_test": [
                    at("1h", "slo-availability-page-fast", none()),
                    at("6h", "slo-availability-page-slow", none()),
                    at("3d", "slo-availability-page-fast", none()),
                    at("3d", "slo-availability-page-slow", none()),
                    at("3d", "slo-availability-ticket", json!([{"exp_labels": {"severity": "warning", "slo": "availability", "window": "3d", "service_name": "api"}}])),
                ],
            },
            {
                // Latency: 20% of requests slower than 500 ms (20x the 1% budget) for 90
                // minutes after a healthy hour, then fast again.
                "name": "latency: a fast burn pages, and clears when requests are fast again",
                "interval": "1m",
                "input_series": traffic(&[(1000.0, 0.0, 0.0, 60), (1000.0, 0.0, 0.2, 90), (1000.0, 0.0, 0.0, 60)]),
                "alert_rule_test": [
                    at("100m", "slo-latency-page-fast", none()),
                    at("120m", "slo-latency-page-fast", page("latency", "1h")),
                    at("148m", "slo-latency-page-fast", page("latency", "1h")),
                    at("160m", "slo-latency-page-fast", none()),
                    at("148m", "slo-availability-page-fast", none()),
                ],
            },
            {
                // 6x for eight hours after a healthy hour: the slow page fires, the fast one
                // (14.4x) does not.
                "name": "availability: a 6x burn is caught by the 6h window only",
                "interval": "1m",
                "input_series": traffic(&[(1000.0, 0.0, 0.0, 60), (1000.0, 0.008, 0.0, 480)]),
                "alert_rule_test": [
                    at("7h", "slo-availability-page-slow", page("availability", "6h")),
                    at("7h", "slo-availability-page-fast", none()),
                ],
            },
        ],
    });
    std::fs::write(tmp.path().join("tests.json"), tests.to_string()).expect("write tests");
    let out = Command::new(tool("promtool"))
        .args(["test", "rules", "tests.json"])
        .current_dir(tmp.path())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "promtool test rules failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Runs `promtool test rules` on `tests` against the shipped rules of every group.
fn promtool_test(tests: &Value) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("rules.json"),
        prometheus_rule_file(None).to_string(),
    )
    .expect("write rules");
    std::fs::write(tmp.path().join("tests.json"), tests.to_string()).expect("write tests");
    let out = Command::new(tool("promtool"))
        .args(["test", "rules", "tests.json"])
        .current_dir(tmp.path())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules failed:\n{text}");
    text
}

#[test]
fn stackwarden_and_host_rules_fire_on_their_signals_and_stay_quiet_otherwise() {
    let sw = r#"job="stackwarden", instance="127.0.0.1:9464""#;
    let node = r#"job="prometheus.scrape.node", instance="node-exporter:9100""#;
    let at = |t: &str, alert: &str, exp: Value| json!({"eval_time": t, "alertname": alert, "exp_alerts": exp});
    let alert = |labels: Value| json!([{ "exp_labels": labels }]);
    let tests = json!({
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [
            {
                // Up for 10 minutes, then down: the page comes 2 minutes (for) later.
                "name": "the daemon down: up == 0",
                "interval": "1m",
                "input_series": [{"series": format!("up{{{sw}}}"), "values": "1x10 0x10"}],
                "alert_rule_test": [
                    at("9m", "stackwarden-down", none()),
                    at("14m", "stackwarden-down", alert(json!({"severity": "critical"}))),
                ],
            },
            {
                // Never scraped at all: absent() pages.
                "name": "the daemon down: never scraped",
                "interval": "1m",
                "input_series": [{"series": format!("stackwarden_leader{{{sw}}}"), "values": "1x10"}],
                "alert_rule_test": [
                    at("5m", "stackwarden-down", alert(json!({"severity": "critical", "job": "stackwarden"}))),
                ],
            },
            {
                // Container/loki drifts from the test's t=0 on and is never repaired; the
                // security group drifted too but is not drifting any more.
                "name": "drift standing for more than 15 minutes",
                "interval": "1m",
                "input_series": [
                    {"series": format!(r#"stackwarden_drift{{{sw}, kind="Container", name="loki"}}"#), "values": "1x30"},
                    {"series": format!(r#"stackwarden_drift_since_timestamp_seconds{{{sw}, kind="Container", name="loki"}}"#), "values": "0x30"},
                    {"series": format!(r#"stackwarden_drift{{{sw}, kind="SecurityGroup", name="sg"}}"#), "values": "0x30"},
                    {"series": format!(r#"stackwarden_drift_since_timestamp_seconds{{{sw}, kind="SecurityGroup", name="sg"}}"#), "values": "0x30"},
                ],
                "alert_rule_test": [
                    at("14m", "stackwarden-drift-standing", none()),
                    at("17m", "stackwarden-drift-standing", alert(json!({"severity": "warning", "kind": "Container", "name": "loki"}))),
                ],
            },
            {
                "name": "policy violations on live state",
                "interval": "1m",
                "input_series": [
                    {"series": format!(r#"stackwarden_policy_violations{{{sw}, rule="no-root-containers"}}"#), "values": "0x5 1x10"},
                    {"series": format!(r#"stackwarden_policy_violations{{{sw}, rule="imdsv2-required"}}"#), "values": "0x15"},
                ],
                "alert_rule_test": [
                    at("5m", "stackwarden-policy-violations", none()),
                    at("12m", "stackwarden-policy-violations", alert(json!({"severity": "critical", "rule": "no-root-containers"}))),
                ],
            },
            {
                // Every pass fails from minute 10: the last success stays at 600 s.
                "name": "reconciles failing for more than 15 minutes",
                "interval": "1m",
                "input_series": [
                    {"series": format!(r#"stackwarden_reconcile_total{{{sw}, result="success", trigger="resync"}}"#), "values": "0+2x10 20x30"},
                    {"series": format!(r#"stackwarden_reconcile_total{{{sw}, result="failed", trigger="resync"}}"#), "values": "0x10 1+2x30"},
                    {"series": format!("stackwarden_last_success_timestamp_seconds{{{sw}}}"), "values": "0+60x10 600x30"},
                ],
                "alert_rule_test": [
                    at("20m", "stackwarden-reconcile-failing", none()),
                    at("32m", "stackwarden-reconcile-failing", alert(json!({"severity": "critical"}))),
                ],
            },
            {
                // 4 GiB host: 95% used from minute 10; the disk 97% full from minute 10.
                "name": "host memory and disk saturation",
                "interval": "1m",
                "input_series": [
                    {"series": format!("node_memory_MemTotal_bytes{{{node}}}"), "values": "4000000000x40"},
                    {"series": format!("node_memory_MemAvailable_bytes{{{node}}}"), "values": "2000000000x10 200000000x30"},
                    {"series": format!(r#"node_filesystem_size_bytes{{{node}, device="/dev/nvme0n1p1", fstype="xfs", mountpoint="/"}}"#), "values": "100x40"},
                    {"series": format!(r#"node_filesystem_avail_bytes{{{node}, device="/dev/nvme0n1p1", fstype="xfs", mountpoint="/"}}"#), "values": "50x10 3x30"},
                    {"series": format!(r#"node_filesystem_size_bytes{{{node}, device="tmpfs", fstype="tmpfs", mountpoint="/run"}}"#), "values": "100x40"},
                    {"series": format!(r#"node_filesystem_avail_bytes{{{node}, device="tmpfs", fstype="tmpfs", mountpoint="/run"}}"#), "values": "1x40"},
                ],
                "alert_rule_test": [
                    at("9m", "host-memory-saturation", none()),
                    at("25m", "host-memory-saturation", alert(json!({"severity": "warning"}))),
                    at("9m", "host-disk-full", none()),
                    // tmpfs is 99% full and ignored.
                    at("20m", "host-disk-full", alert(json!({"severity": "critical", "job": "prometheus.scrape.node", "instance": "node-exporter:9100", "device": "/dev/nvme0n1p1", "fstype": "xfs", "mountpoint": "/"}))),
                ],
            },
        ],
    });
    let text = promtool_test(&tests);
    println!("{text}");
}

// ---------------------------------------------------------------------------------------------
// Every panel query returns data from a real Prometheus loaded with the sample.

/// How long the sample spans, and its step.
const SAMPLE_SPAN: Duration = Duration::from_secs(2 * 3600);
const SAMPLE_STEP: u64 = 15;
/// Prometheus answers /-/ready after replaying its blocks; a cold start takes a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct SampleLine {
    name: String,
    labels: String,
    kind: String,
    args: Vec<String>,
}

fn sample() -> Vec<SampleLine> {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/grafana-sample/series.txt"))
        .expect("sample");
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, rest) = line.split_once("} ").expect("`name{labels} kind args`");
        let (name, labels) = series.split_once('{').expect("labels");
        let mut words = rest.split_whitespace();
        out.push(SampleLine {
            name: name.to_string(),
            labels: labels.to_string(),
            kind: words.next().expect("kind").to_string(),
            args: words.map(str::to_string).collect(),
        });
    }
    out
}

fn label_names(labels: &str) -> Vec<String> {
    labels
        .split("\",")
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

fn catalogue() -> Catalogue {
    let path = repo().join("dashboards/catalogue.yaml");
    let text = std::fs::read_to_string(&path).expect("catalogue");
    let file = ContentFile::new("catalogue".into(), path, &text);
    Catalogue::read(&file, &mut Sink::default()).expect("the catalogue reads")
}

#[test]
fn the_sample_holds_only_series_and_labels_the_catalogue_declares() {
    let cat = catalogue();
    for s in sample() {
        let names: Vec<String> = if s.kind == "histogram" {
            vec![format!("{}_bucket", s.name), format!("{}_count", s.name)]
        } else {
            vec![s.name.clone()]
        };
        for n in names {
            let series = cat
                .series(&n)
                .unwrap_or_else(|| panic!("{n} is not in the catalogue"));
            for l in label_names(&s.labels) {
                assert!(
                    series.labels.contains(&l),
                    "{n} has label {l}, which the catalogue does not declare"
                );
            }
        }
    }
}

/// The sample as OpenMetrics text, ending at `end` (unix seconds).
fn openmetrics(end: u64) -> String {
    let start = end - SAMPLE_SPAN.as_secs();
    let times: Vec<u64> = (start..=end)
        .step_by(usize::try_from(SAMPLE_STEP).expect("step"))
        .collect();
    // Family name → its series lines (OpenMetrics wants each family's samples together).
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut push = |family: String, labels: String, value: &dyn Fn(u64) -> f64| {
        let lines = families.entry(family.clone()).or_default();
        for &t in &times {
            lines.push(format!("{family}{{{labels}}} {} {t}", value(t)));
        }
    };
    for s in sample() {
        let elapsed = move |t: u64| (t - start) as f64;
        match s.kind.as_str() {
            "counter" => {
                let rate: f64 = s.args[0].parse().expect("rate");
                push(s.name, s.labels, &|t| rate * elapsed(t));
            }
            "gauge" => {
                let v: f64 = s.args[0].parse().expect("value");
                push(s.name, s.labels, &|_| v);
            }
            "age" => {
                let age: f64 = s.args[0].parse().expect("seconds");
                push(s.name, s.labels, &|t| t as f64 - age);
            }
            "histogram" => {
                let rate: f64 = s.args[0].parse().expect("rate");
                let mean: f64 = s.args[1]
                    .strip_prefix("mean=")
                    .expect("mean=")
                    .parse()
                    .expect("mean");
                for b in &s.args[2..] {
                    let (le, frac) = b.split_once('=').expect("le=fraction");
                    let frac: f64 = frac.parse().expect("fraction");
                    push(
                        format!("{}_bucket", s.name),
                        format!("{},le=\"{le}\"", s.labels),
                        &|t| rate * frac * elapsed(t),
                    );
                }
                push(format!("{}_count", s.name), s.labels.clone(), &|t| {
                    rate * elapsed(t)
                });
                push(format!("{}_sum", s.name), s.labels, &|t| {
                    rate * mean * elapsed(t)
                });
            }
            other => panic!("unknown sample kind {other}"),
        }
    }
    let mut out = String::new();
    for lines in families.values() {
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A Prometheus on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Loads the sample into a TSDB (promtool) and serves it.
    fn with_sample(dir: &Path, end: u64) -> Prometheus {
        let om = dir.join("sample.om");
        std::fs::write(&om, openmetrics(end)).expect("write sample");
        let data = dir.join("data");
        let out = Command::new(tool("promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&data)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool could not build blocks from the sample: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("write config");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=30d")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port };
        let deadline = Instant::now() + READY_TIMEOUT;
        while p.get("/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    /// An instant query's result list (a scalar counts as one result).
    fn query(&self, expr: &str, time: u64) -> Result<usize, String> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}&time={time}", encode(expr)))
            .ok_or("no answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.len()),
            Value::Null => Ok(0),
            _ => Ok(1),
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every Prometheus query of a dashboard: (where, expression), variables set to "All".
fn prometheus_queries(dashboard: &Value) -> Vec<(String, String)> {
    let vars: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let all = |expr: &str| {
        let mut e = promql::render(expr);
        for v in &vars {
            e = e
                .replace(&format!("${{{v}}}"), ".*")
                .replace(&format!("${v}"), ".*");
        }
        e
    };
    let mut out = Vec::new();
    fn walk(panels: &[Value], out: &mut Vec<(String, Value, Value)>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    p["datasource"].clone(),
                    t.clone(),
                ));
            }
            walk(
                p["panels"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                out,
            );
        }
    }
    let mut targets = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        &mut targets,
    );
    for (title, panel_ds, t) in targets {
        let ds = if t["datasource"].is_object() {
            &t["datasource"]
        } else {
            &panel_ds
        };
        if ds["type"] == "prometheus" {
            out.push((
                format!("panel `{title}` {}", t["refId"]),
                all(t["expr"].as_str().unwrap_or("")),
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        if let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
            && let Some((metric, label)) = args.rsplit_once(',')
        {
            // The values Grafana would list: the label must exist on the series.
            out.push((
                format!("variable `{}`", v["name"].as_str().unwrap_or("?")),
                format!("group by ({}) ({})", label.trim(), all(metric.trim())),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_panel_query_returns_data_from_a_real_prometheus() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Whole steps, a minute in the past: the blocks are complete and older than the head.
    let end = (now - 60) / SAMPLE_STEP * SAMPLE_STEP;
    let prom = Prometheus::with_sample(tmp.path(), end);
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .expect("dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in &files {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("json");
        for (what, expr) in prometheus_queries(&d) {
            checked += 1;
            match prom.query(&expr, end) {
                Ok(0) => failures.push(format!("{} {what}: No data for {expr}", file.display())),
                Ok(_) => {}
                Err(e) => failures.push(format!("{} {what}: {e} for {expr}", file.display())),
            }
        }
    }
    println!(
        "{checked} Prometheus queries of {} dashboards returned data",
        files.len()
    );
    assert!(checked > 50, "only {checked} queries found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
