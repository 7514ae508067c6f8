//! The container config hash: a stable digest of everything a container is created from,
//! stored as a label (as docker compose does) so that a changed manifest is seen without
//! comparing every field. Pure: no I/O.
//!
//! Secret values (ConfigFiles `fromParameter`, mounted into the container) are NOT hashed,
//! only the name of the Parameter they come from: the label is readable by anyone who can
//! `docker inspect`, and a digest of a short password can be brute-forced offline. A changed
//! secret rewrites its file, which rolls the containers that mount it (see `diff`).

use crate::model::ContainerSpec;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The label holding a container's config hash.
pub const HASH_LABEL: &str = "stackwarden.config-hash";

/// Bumped when what is hashed changes, so old labels never match by accident.
const HASH_VERSION: &str = "v1";

/// The sha256 of some bytes, hex-encoded.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the hash covers: the spec minus secret values, minus fields that never reach the
/// engine (start order, the root allowance), plus what the engine is given besides the spec.
#[derive(Serialize)]
struct Hashed<'a> {
    version: &'static str,
    name: &'a str,
    spec: SpecView<'a>,
    /// ConfigFile name → sha256 of its desired content: a changed file rolls the container.
    mounted_files: &'a BTreeMap<String, String>,
    /// Bind sources as resolved against the host root: moving the root moves the mounts.
    binds: &'a [String],
}

#[derive(Serialize)]
struct SpecView<'a> {
    image: &'a str,
    command: &'a [String],
    /// Literal values (secrets never reach the environment).
    environment: BTreeMap<&'a str, String>,
    user: Option<&'a str>,
    /// Left out when empty: the hash of every container declared before `groupAdd` existed
    /// stays what it was, so none rolls for it.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    group_add: &'a [String],
    privileged: bool,
    cap_add: &'a [String],
    cap_drop: &'a [String],
    security_opt: &'a [String],
    devices: &'a [crate::model::Device],
    read_only_root_filesystem: bool,
    tmpfs: &'a BTreeMap<String, String>,
    mounts: &'a [crate::model::Mount],
    ports: &'a [crate::model::Port],
    network: &'a str,
    memory: u64,
    restart: &'static str,
    health_check: &'a Option<crate::model::HealthCheck>,
    labels: &'a BTreeMap<String, String>,
}

/// The config hash of a container: `name` is its service, `mounted_files` the desired
/// content digests of its ConfigFile mounts, `binds` its resolved bind strings.
pub fn config_hash(
    name: &str,
    spec: &ContainerSpec,
    mounted_files: &BTreeMap<String, String>,
    binds: &[String],
) -> String {
    let environment = spec
        .environment
        .iter()
        // `value:` keeps the hashed form of older releases, so no container rolls for it.
        .map(|(k, v)| (k.as_str(), format!("value:{}", v.value)))
        .collect();
    let hashed = Hashed {
        version: HASH_VERSION,
        name,
        spec: SpecView {
            image: &spec.image,
            command: &spec.command,
            environment,
            user: spec.user.as_deref(),
            group_add: &spec.group_add,
            privileged: spec.privileged,
            cap_add: &spec.cap_add,
            cap_drop: &spec.cap_drop,
            security_opt: &spec.security_opt,
            devices: &spec.devices,
            read_only_root_filesystem: spec.read_only_root_filesystem,
            tmpfs: &spec.tmpfs,
            mounts: &spec.mounts,
            ports: &spec.ports,
            network: &spec.network,
            memory: spec.memory.0,
            restart: spec.restart.as_docker(),
            health_check: &spec.health_check,
            labels: &spec.labels,
        },
        mounted_files,
        binds,
    };
    // Serializing plain structs, BTreeMaps and strings cannot fail; an empty string would
    // only ever mismatch (forcing a recreate), never match wrongly.
    let json = serde_json::to_vec(&hashed).unwrap_or_default();
    sha256_hex(&json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnvValue, MemSize, RestartPolicy};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "stackwarden/stub:local".into(),
            command: vec![],
            environment: BTreeMap::new(),
            user: Some("10001:10001".into()),
            group_add: vec![],
            allow_root: None,
            privileged: false,
            cap_add: vec![],
            cap_drop: vec!["ALL".into()],
            security_opt: vec!["no-new-privileges".into()],
            devices: vec![],
            read_only_root_filesystem: true,
            tmpfs: BTreeMap::new(),
            mounts: vec![],
            ports: vec![],
            network: "none".into(),
            memory: MemSize(64 << 20),
            restart: RestartPolicy::UnlessStopped,
            health_check: None,
            depends_on: vec![],
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn hash_is_stable_for_the_same_spec() {
        let files = BTreeMap::new();
        assert_eq!(
            config_hash("loki", &spec(), &files, &[]),
            config_hash("loki", &spec(), &files, &[])
        );
    }

    #[test]
    fn hash_changes_with_a_security_field_and_a_mounted_file() {
        let files = BTreeMap::new();
        let base = config_hash("loki", &spec(), &files, &[]);
        let mut root = spec();
        root.user = None;
        assert_ne!(base, config_hash("loki", &root, &files, &[]));
        let mut other_files = BTreeMap::new();
        other_files.insert("loki-config".to_string(), sha256_hex(b"a"));
        assert_ne!(base, config_hash("loki", &spec(), &other_files, &[]));
        let mut grouped = spec();
        grouped.group_add = vec!["992".into()];
        assert_ne!(base, config_hash("loki", &grouped, &files, &[]));
    }

    #[test]
    fn hash_ignores_start_order() {
        let files = BTreeMap::new();
        let mut a = spec();
        a.environment.insert(
            "PASSWORD__FILE".into(),
            EnvValue {
                value: "/run/secrets/password".into(),
            },
        );
        let mut b = a.clone();
        b.depends_on.push(crate::model::DependsOn {
            container: "mimir".into(),
            condition: crate::model::DependsOnCondition::Healthy,
        });
        assert_eq!(
            config_hash("g", &a, &files, &[]),
            config_hash("g", &b, &files, &[])
        );
    }

    /// A change to this value recreates every container of every stack on upgrade: bump it
    /// only on purpose (and say so in the release notes).
    #[test]
    fn hash_of_a_fixed_spec_is_pinned() {
        let mut s = spec();
        s.environment
            .insert("A".into(), EnvValue { value: "1".into() });
        let mut files = BTreeMap::new();
        files.insert("loki-config".to_string(), sha256_hex(b"a"));
        assert_eq!(
            config_hash("loki", &s, &files, &["/r/loki:/data".to_string()]),
            "867f06872f5585437d09872b5faab7e2dea00b0bb90cd50918777b15c8cb4523"
        );
    }
}
