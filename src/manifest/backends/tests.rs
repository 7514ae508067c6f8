//! Each backend's layout from a config text: the keys its pinned version writes, and a located
//! error for a config that leaves them to chance.

use super::*;

const BUCKET: &str = "dc-dev-observability-123456789012";

fn derive(backend: Backend, text: &str) -> Result<Layout, LayoutError> {
    let doc = yaml::parse(text)
        .expect("the test's YAML parses")
        .swap_remove(0);
    layout(Config {
        backend,
        resource: "ConfigFile/test-config",
        file: Path::new("config/test.yaml"),
        doc: &doc,
    })
}

/// `bucket keys` per area, the form a grant takes.
fn keys(l: &Layout) -> Vec<String> {
    l.areas
        .iter()
        .map(|a| format!("{} {}", a.bucket, a.keys.as_str()))
        .collect()
}

fn error(backend: Backend, text: &str) -> LayoutError {
    match derive(backend, text) {
        Ok(l) => panic!("derived {l:?} from a config that should be refused"),
        Err(e) => e,
    }
}

// -- Mimir

const MIMIR: &str = "\
target: all
common:
  storage:
    backend: s3
    s3:
      bucket_name: dc-dev-observability-123456789012
blocks_storage:
  storage_prefix: mimir
ruler_storage:
  backend: filesystem
";

#[test]
fn mimir_keeps_blocks_under_the_blocks_storage_prefix() {
    let l = derive(Backend::Mimir, MIMIR).expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} mimir/")]);
    assert_eq!(l.areas[0].path, "blocks_storage.storage_prefix");
    assert_eq!(l.areas[0].at.line, 8);
}

#[test]
fn mimir_with_another_prefix_keeps_its_blocks_there() {
    let l = derive(
        Backend::Mimir,
        &MIMIR.replace("storage_prefix: mimir", "storage_prefix: metrics"),
    )
    .expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} metrics/")]);
}

#[test]
fn mimir_takes_the_common_prefix_when_blocks_storage_sets_none() {
    let text = MIMIR
        .replace("blocks_storage:\n  storage_prefix: mimir\n", "")
        .replace(
            "    backend: s3\n",
            "    backend: s3\n    storage_prefix: shared\n",
        );
    let l = derive(Backend::Mimir, &text).expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} shared/")]);
    assert_eq!(l.areas[0].path, "common.storage.storage_prefix");
}

#[test]
fn mimir_without_a_prefix_is_an_error_at_blocks_storage() {
    let e = error(
        Backend::Mimir,
        &MIMIR.replace("  storage_prefix: mimir\n", "  tsdb: {dir: /data}\n"),
    );
    assert_eq!(e.path, "blocks_storage.storage_prefix");
    assert!(matches!(*e.problem, Problem::Missing { .. }), "{e}");
    // The field is absent: the error points at its parent, blocks_storage (line 7).
    assert_eq!(
        (e.at.file.to_str(), e.at.line),
        (Some("config/test.yaml"), 7)
    );
    assert!(
        e.to_string()
            .starts_with("config/test.yaml:7:1: ConfigFile/test-config (Mimir)"),
        "{e}"
    );
    assert!(
        e.fix().contains("blocks_storage.storage_prefix"),
        "{}",
        e.fix()
    );
}

#[test]
fn mimir_without_a_bucket_is_an_error_naming_the_field() {
    let e = error(
        Backend::Mimir,
        &MIMIR.replace(
            "      bucket_name: dc-dev-observability-123456789012\n",
            "      region: us-east-1\n",
        ),
    );
    assert_eq!(e.path, "blocks_storage.s3.bucket_name");
    assert!(matches!(*e.problem, Problem::Missing { .. }), "{e}");
}

#[test]
fn mimir_refuses_a_prefix_it_would_refuse_to_start_with() {
    let e = error(
        Backend::Mimir,
        &MIMIR.replace("storage_prefix: mimir", "storage_prefix: mimir/blocks"),
    );
    assert!(matches!(*e.problem, Problem::BadPrefix { .. }), "{e}");
    assert_eq!(e.at.line, 8);
}

#[test]
fn mimir_ruler_on_s3_without_a_prefix_keeps_rules_at_the_bucket_root() {
    let l = derive(
        Backend::Mimir,
        &MIMIR.replace("ruler_storage:\n  backend: filesystem\n", ""),
    )
    .expect("layout");
    assert_eq!(
        keys(&l),
        [format!("{BUCKET} mimir/"), format!("{BUCKET} rules/")]
    );
}

#[test]
fn mimir_on_the_filesystem_keeps_nothing_in_s3() {
    let l = derive(Backend::Mimir, "blocks_storage:\n  backend: filesystem\n").expect("layout");
    assert!(l.areas.is_empty(), "{l:?}");
}

#[test]
fn mimir_alertmanager_counts_only_when_the_target_runs_it() {
    let text = MIMIR.replace("target: all", "target: all,alertmanager");
    let l = derive(Backend::Mimir, &text).expect("layout");
    assert_eq!(
        keys(&l),
        [
            format!("{BUCKET} mimir/"),
            format!("{BUCKET} alerts/"),
            format!("{BUCKET} alertmanager/")
        ]
    );
}

// -- Loki

const LOKI: &str = "\
auth_enabled: false
storage_config:
  object_prefix: loki/
  aws:
    bucketnames: dc-dev-observability-123456789012
schema_config:
  configs:
    - from: \"2024-01-01\"
      store: tsdb
      object_store: s3
      schema: v13
      index:
        prefix: index_
        period: 24h
compactor:
  delete_request_store: s3
";

#[test]
fn loki_keeps_everything_under_its_object_prefix() {
    let l = derive(Backend::Loki, LOKI).expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} loki/")]);
    assert_eq!(l.areas[0].path, "storage_config.object_prefix");
}

#[test]
fn loki_object_prefix_without_its_slash_means_the_same() {
    let l = derive(
        Backend::Loki,
        &LOKI.replace("object_prefix: loki/", "object_prefix: logs"),
    )
    .expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} logs/")]);
}

#[test]
fn loki_without_a_prefix_writes_the_single_tenant_its_index_and_its_seed_at_the_root() {
    let l = derive(Backend::Loki, &LOKI.replace("  object_prefix: loki/\n", "")).expect("layout");
    assert_eq!(
        keys(&l),
        [
            format!("{BUCKET} fake/"),
            format!("{BUCKET} index/"),
            format!("{BUCKET} loki_cluster_seed.json"),
        ]
    );
}

#[test]
fn loki_without_a_prefix_and_with_tenants_is_an_error() {
    let text = LOKI
        .replace("  object_prefix: loki/\n", "")
        .replace("auth_enabled: false\n", "");
    let e = error(Backend::Loki, &text);
    assert_eq!(*e.problem, Problem::UnknownTenants);
    assert_eq!(e.path, "storage_config.object_prefix");
    assert_eq!(
        e.at.line, 1,
        "storage_config is on line 1 once auth_enabled is gone"
    );
}

#[test]
fn loki_on_common_storage_also_puts_its_ruler_at_the_bucket_root() {
    let text = LOKI.replace(
        "  aws:\n    bucketnames: dc-dev-observability-123456789012\n",
        "",
    ) + "common:\n  storage:\n    s3:\n      bucketnames: dc-dev-observability-123456789012\n";
    let l = derive(Backend::Loki, &text).expect("layout");
    assert_eq!(
        keys(&l),
        [format!("{BUCKET} loki/"), format!("{BUCKET} rules/")]
    );
}

#[test]
fn loki_periods_on_s3_without_a_bucket_are_an_error() {
    let e = error(
        Backend::Loki,
        &LOKI.replace(
            "  aws:\n    bucketnames: dc-dev-observability-123456789012\n",
            "",
        ),
    );
    assert_eq!(e.path, "storage_config.aws.bucketnames");
    assert_eq!(
        e.at.line, 2,
        "at storage_config, the nearest declared parent"
    );
}

#[test]
fn loki_refuses_a_prefix_iam_would_read_as_a_wildcard() {
    let e = error(
        Backend::Loki,
        &LOKI.replace("object_prefix: loki/", "object_prefix: \"lo*\""),
    );
    assert!(matches!(*e.problem, Problem::BadPrefix { .. }), "{e}");
}

// -- Tempo

const TEMPO: &str = "\
storage:
  trace:
    backend: s3
    s3:
      bucket: dc-dev-observability-123456789012
      prefix: tempo
";

#[test]
fn tempo_keeps_traces_under_its_s3_prefix() {
    let l = derive(Backend::Tempo, TEMPO).expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} tempo/")]);
    assert_eq!(l.areas[0].at.line, 6);
}

#[test]
fn tempo_takes_a_nested_prefix() {
    let l = derive(
        Backend::Tempo,
        &TEMPO.replace("prefix: tempo", "prefix: traces/v2/"),
    )
    .expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} traces/v2/")]);
}

#[test]
fn tempo_without_a_bucket_is_an_error_at_its_s3_block() {
    let e = error(
        Backend::Tempo,
        &TEMPO.replace("      bucket: dc-dev-observability-123456789012\n", ""),
    );
    assert_eq!(e.path, "storage.trace.s3.bucket");
    assert_eq!(e.at.line, 4);
}

#[test]
fn tempo_without_a_prefix_is_an_error() {
    let e = error(Backend::Tempo, &TEMPO.replace("      prefix: tempo\n", ""));
    assert_eq!(e.path, "storage.trace.s3.prefix");
    assert!(matches!(*e.problem, Problem::Missing { .. }), "{e}");
}

// -- Pyroscope

const PYROSCOPE: &str = "\
storage:
  backend: s3
  storage_prefix: pyroscope
  s3:
    bucket_name: dc-dev-observability-123456789012
";

#[test]
fn pyroscope_keeps_profiles_under_its_storage_prefix() {
    let l = derive(Backend::Pyroscope, PYROSCOPE).expect("layout");
    assert_eq!(keys(&l), [format!("{BUCKET} pyroscope/")]);
}

#[test]
fn pyroscope_reads_storage_prefix_not_prefix() {
    // The key the seed's config used: Pyroscope knows no `storage.prefix` and would not start.
    let e = error(
        Backend::Pyroscope,
        &PYROSCOPE.replace("storage_prefix: pyroscope", "prefix: pyroscope"),
    );
    assert_eq!(e.path, "storage.storage_prefix");
    assert!(
        e.fix().contains("storage_prefix, not prefix"),
        "{}",
        e.fix()
    );
}

// -- Keys

#[test]
fn prefixes_overlap_only_along_their_delimiters() {
    let p = |s: &str| Keys::Prefix(s.into());
    assert!(p("stackwarden/").overlaps(&p("stackwarden/dev/")));
    assert!(p("stackwarden/dev/").overlaps(&p("stackwarden/")));
    assert!(!p("stack/").overlaps(&p("stackwarden/")));
    assert!(!p("tempo/").overlaps(&p("tempox/")));
    assert!(Keys::Object("stackwarden/x".into()).overlaps(&p("stackwarden/")));
    assert!(!Keys::Object("loki_cluster_seed.json".into()).overlaps(&p("loki/")));
}
