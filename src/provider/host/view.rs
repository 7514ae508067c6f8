//! The normalized view of a container: one type for what is declared and what is observed,
//! so that comparing them is plain equality field by field. Both sides are brought to one
//! spelling here (docs/quirks.md, "Docker Engine"): null = [] = {}, `""` = `no` restart,
//! capabilities upper-cased with `CAP_`, every spelling of no-new-privileges, binds without
//! `rw`. No I/O.

use std::collections::BTreeMap;
use std::fmt;

/// Every setting of a container a person can change by hand, normalized. Adding a field here
/// forces a case in the comparison (`diff::container`) and in its table test: both destructure
/// this struct without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerView {
    /// Image id (`sha256:…`).
    pub image: String,
    /// `Config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Config.Cmd`.
    pub command: Vec<String>,
    /// The environment, minus what the image itself sets (values may be sensitive).
    pub env: Env,
    /// `Config.WorkingDir`.
    pub working_dir: String,
    /// `Config.Hostname`.
    pub hostname: String,
    /// Labels, minus the image's own and the mount-identity label.
    pub labels: BTreeMap<String, String>,
    /// `Config.User`; `""` is root.
    pub user: String,
    /// Privileged mode.
    pub privileged: bool,
    /// Added capabilities, `CAP_X` upper-case, sorted.
    pub cap_add: Vec<String>,
    /// Dropped capabilities, same form.
    pub cap_drop: Vec<String>,
    /// Security options, normalized and sorted.
    pub security_opt: Vec<String>,
    /// Devices as `host:container:perms`, sorted.
    pub devices: Vec<String>,
    /// Read-only root file system.
    pub read_only: bool,
    /// False when /proc and /sys paths are unmasked (`systempaths=unconfined`, privileged).
    pub masked_paths: bool,
    /// Namespace modes that differ from the engine's default (`pid=host`, `ipc=host`, …).
    pub namespaces: BTreeMap<String, String>,
    /// Supplementary groups.
    pub group_add: Vec<String>,
    /// Namespaced kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// Device cgroup rules (`c 1:3 rwm`): device access without a device mapping.
    pub device_cgroup_rules: Vec<String>,
    /// OCI runtime; `""` for the engine's default (`runc`).
    pub runtime: String,
    /// Memory limit in bytes (0 = none).
    pub memory: i64,
    /// Memory + swap limit; 0 for the engine's default (unset, or twice the memory).
    pub memory_swap: i64,
    /// CPU limits that are set (`nano_cpus=…`, `shares=…`, `quota=…`, `period=…`, `cpuset=…`).
    pub cpu: Vec<String>,
    /// Process count limit; 0 = unlimited.
    pub pids_limit: i64,
    /// OOM killer disabled.
    pub oom_kill_disable: bool,
    /// Resource limits as `name=soft:hard`, sorted.
    pub ulimits: Vec<String>,
    /// OOM score adjustment.
    pub oom_score_adj: i64,
    /// /dev/shm size in bytes; 0 for the engine's default (64 MiB).
    pub shm_size: i64,
    /// Parent cgroup; `""` for the engine's default.
    pub cgroup_parent: String,
    /// Bind mounts and volumes as `source:target[:opts]`, sorted.
    pub binds: Vec<String>,
    /// Mount target → identity (`dev:inode`) of its source under the host root when the
    /// container was created: a directory deleted and recreated has a new identity while
    /// the container still writes into the deleted one.
    pub mount_sources: BTreeMap<String, String>,
    /// tmpfs mounts: target → options.
    pub tmpfs: BTreeMap<String, String>,
    /// Containers whose volumes are mounted.
    pub volumes_from: Vec<String>,
    /// Network mode.
    pub network: String,
    /// The networks it is attached to, sorted: a container can be disconnected from its
    /// mode's network and connected to another while the mode still reads the same.
    pub networks: Vec<String>,
    /// Published ports as `hostIp:hostPort->port/proto`, sorted.
    pub ports: Vec<String>,
    /// Every exposed port published on a random host port (`-P`).
    pub publish_all_ports: bool,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Vec<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// Restart policy, Docker spelling (`no` for unset), with `:N` retries when set.
    pub restart: String,
    /// The health check; `None` when there is none (or `NONE`).
    pub health: Option<HealthView>,
    /// Docker's init process as PID 1.
    pub init: bool,
}

/// A health check, durations in nanoseconds (0 = the engine's default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthView {
    /// `Test`, verbatim.
    pub test: Vec<String>,
    /// Interval.
    pub interval: i64,
    /// Timeout.
    pub timeout: i64,
    /// Retries.
    pub retries: i64,
    /// Start period.
    pub start_period: i64,
}

impl fmt::Display for HealthView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |n: i64| std::time::Duration::from_nanos(u64::try_from(n).unwrap_or(0));
        write!(
            f,
            "[{}] every {:?}, timeout {:?}, retries {}, start period {:?}",
            self.test.join(" "),
            s(self.interval),
            s(self.timeout),
            self.retries,
            s(self.start_period)
        )
    }
}

/// Environment values, kept out of `Debug` output: a value set by hand may be a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(pub BTreeMap<String, String>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `KEY=value` strings as a map (a bare `KEY` has an empty value).
pub fn env_map(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Normalizes capability names: `net_admin`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL` stays.
pub fn normalize_caps(caps: &[String]) -> Vec<String> {
    let mut out: Vec<String> = caps
        .iter()
        .map(|c| {
            let up = c.trim().to_ascii_uppercase();
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            if bare == "ALL" {
                "ALL".to_string()
            } else {
                format!("CAP_{bare}")
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Normalizes security options: every spelling of no-new-privileges (`:true`, `=true`) is
/// one; `label=disable` is dropped when privileged (the engine adds it by itself then).
pub fn normalize_security_opt(opts: &[String], privileged: bool) -> Vec<String> {
    let mut out: Vec<String> = opts
        .iter()
        .filter_map(|o| {
            let o = o.trim();
            let (key, value) = match o.find([':', '=']) {
                Some(i) => (&o[..i], Some(&o[i + 1..])),
                None => (o, None),
            };
            if key == "no-new-privileges" {
                return match value {
                    None | Some("true") => Some("no-new-privileges".to_string()),
                    Some(_) => None,
                };
            }
            if privileged && key == "label" && value == Some("disable") {
                return None;
            }
            Some(match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_string(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Normalizes a bind string: `src:dst`, `src:dst:ro`; `rw` and empty options vanish, other
/// options are sorted.
pub fn normalize_bind(bind: &str) -> String {
    let mut parts = bind.splitn(3, ':');
    let (src, dst, opts) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let mut opts: Vec<&str> = opts
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "rw")
        .collect();
    opts.sort_unstable();
    if opts.is_empty() {
        format!("{src}:{dst}")
    } else {
        format!("{src}:{dst}:{}", opts.join(","))
    }
}

/// One device as `host:container:perms`, the container path and permissions defaulted.
pub fn device_string(host: &str, container: &str, perms: &str) -> String {
    let container = if container.is_empty() {
        host
    } else {
        container
    };
    let perms = if perms.is_empty() { "rwm" } else { perms };
    format!("{host}:{container}:{perms}")
}

/// One published port as `hostIp:hostPort->port/proto` (host IP defaults to all addresses).
pub fn port_string(host_ip: &str, host_port: &str, container: &str) -> String {
    let ip = if host_ip.is_empty() {
        "0.0.0.0"
    } else {
        host_ip
    };
    format!("{ip}:{host_port}->{container}")
}

/// The memory-swap limit as compared: the engine stores twice the memory when it is unset,
/// and -1 when the kernel cannot limit swap (it warns and drops the limit), so both count as
/// unset; any other value was set by someone.
pub fn normalize_swap(memory: i64, swap: i64) -> i64 {
    if swap == 0 || swap == -1 || (memory > 0 && swap == 2 * memory) {
        0
    } else {
        swap
    }
}

/// A health check's test, with `NONE` (a check disabled by hand) as no check at all.
pub fn health_view(
    test: &[String],
    interval: i64,
    timeout: i64,
    retries: i64,
    start_period: i64,
) -> Option<HealthView> {
    if test.is_empty() || test.first().map(String::as_str) == Some("NONE") {
        return None;
    }
    Some(HealthView {
        test: test.to_vec(),
        interval,
        timeout,
        retries,
        start_period,
    })
}

/// Sorted, deduplicated.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn capabilities_compare_in_any_spelling() {
        assert_eq!(
            normalize_caps(&s(&["net_admin", "CAP_SYSLOG", "all"])),
            s(&["ALL", "CAP_NET_ADMIN", "CAP_SYSLOG"])
        );
        assert_eq!(
            normalize_caps(&s(&["NET_ADMIN"])),
            normalize_caps(&s(&["CAP_NET_ADMIN"]))
        );
    }

    #[test]
    fn every_no_new_privileges_spelling_is_one() {
        for spelling in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            assert_eq!(
                normalize_security_opt(&s(&[spelling]), false),
                s(&["no-new-privileges"])
            );
        }
        assert!(normalize_security_opt(&s(&["no-new-privileges:false"]), false).is_empty());
        assert!(normalize_security_opt(&s(&["label=disable"]), true).is_empty());
        assert_eq!(
            normalize_security_opt(&s(&["label:disable"]), false),
            s(&["label=disable"])
        );
    }

    #[test]
    fn binds_ignore_rw_and_option_order() {
        assert_eq!(normalize_bind("/a:/b:rw"), "/a:/b");
        assert_eq!(normalize_bind("/a:/b"), "/a:/b");
        assert_eq!(normalize_bind("/a:/b:z,ro"), "/a:/b:ro,z");
    }

    #[test]
    fn swap_left_to_the_engine_equals_unset() {
        assert_eq!(normalize_swap(1 << 20, 2 << 20), 0);
        assert_eq!(normalize_swap(1 << 20, 0), 0);
        assert_eq!(normalize_swap(1 << 20, -1), 0);
        assert_eq!(normalize_swap(1 << 20, 3 << 20), 3 << 20);
    }

    #[test]
    fn a_health_check_disabled_by_hand_is_no_health_check() {
        assert_eq!(health_view(&s(&["NONE"]), 0, 0, 0, 0), None);
        assert!(health_view(&s(&["CMD", "true"]), 0, 0, 0, 0).is_some());
    }
}
