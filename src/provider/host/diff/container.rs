//! One declared container against its live copy: the desired [`ContainerView`] (the spec
//! plus what the engine fills in from the image), and the comparison, one small function per
//! concern. Every field of the view is compared, lists and maps whole: an extra environment
//! variable, label, bind or port is a difference like a changed one. Pure.

use super::super::docker::ImageInfo;
use super::super::view::{
    ContainerView, Env, HealthView, device_string, normalize_bind, normalize_caps,
    normalize_security_opt, port_string, sorted,
};
use crate::model::ContainerSpec;
use crate::plan::FieldChange;
use std::collections::BTreeMap;
use std::fmt::Display;

/// The view a declared container must have. `image` is the image as found on the engine
/// (`None` when absent: image-given fields are then left empty and the image itself differs
/// anyway); `binds` resolved against the host root; `mount_sources` the identity of each
/// bind source under the root as observed now; `labels` complete (stack and hash included).
pub fn desired_view(
    name: &str,
    spec: &ContainerSpec,
    image: Option<&ImageInfo>,
    binds: &[String],
    mount_sources: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
) -> ContainerView {
    let image = image.cloned().unwrap_or_default();
    let devices = spec
        .devices
        .iter()
        .map(|d| {
            device_string(
                &d.host_path,
                d.container_path.as_deref().unwrap_or(""),
                &d.permissions,
            )
        })
        .collect();
    // The engine refuses published ports without a network namespace of our own; create
    // drops them there, so they are not expected either.
    let publish = !matches!(spec.network.as_str(), "none" | "host");
    let ports = spec
        .ports
        .iter()
        .filter(|_| publish)
        .map(|p| {
            port_string(
                &p.host_ip,
                &p.host.unwrap_or(p.container).to_string(),
                &format!("{}/{}", p.container, p.protocol),
            )
        })
        .collect();
    let memory = i64::try_from(spec.memory.0).unwrap_or(i64::MAX);
    ContainerView {
        image: image.id.clone(),
        entrypoint: image.entrypoint.clone(),
        command: if spec.command.is_empty() {
            image.command.clone()
        } else {
            spec.command.clone()
        },
        env: Env(spec
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .filter(|(k, v)| image.env.get(k) != Some(v))
            .collect()),
        working_dir: image.working_dir.clone(),
        hostname: name.to_string(),
        labels,
        user: spec
            .user
            .clone()
            .unwrap_or_else(|| image.user.clone())
            .trim()
            .to_string(),
        privileged: spec.privileged,
        cap_add: normalize_caps(&spec.cap_add),
        cap_drop: normalize_caps(&spec.cap_drop),
        security_opt: normalize_security_opt(&spec.security_opt, spec.privileged),
        devices: sorted(devices),
        read_only: spec.read_only_root_filesystem,
        masked_paths: !spec.privileged,
        namespaces: BTreeMap::new(),
        group_add: sorted(spec.group_add.clone()),
        sysctls: BTreeMap::new(),
        device_cgroup_rules: Vec::new(),
        runtime: String::new(),
        memory,
        memory_swap: 0,
        cpu: Vec::new(),
        pids_limit: 0,
        oom_kill_disable: false,
        ulimits: Vec::new(),
        oom_score_adj: 0,
        shm_size: 0,
        cgroup_parent: String::new(),
        binds: sorted(binds.iter().map(|b| normalize_bind(b)).collect()),
        mount_sources,
        tmpfs: spec.tmpfs.clone(),
        volumes_from: Vec::new(),
        network: spec.network.clone(),
        networks: attached_networks(&spec.network),
        ports: sorted(ports),
        publish_all_ports: false,
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        restart: spec.restart.as_docker().to_string(),
        health: match &spec.health_check {
            Some(h) => {
                // The engine fills each duration (and retries) left at zero from the
                // image's HEALTHCHECK: so does the view, or such a container (stackwarden's
                // own, whose image has a start period) would differ forever.
                let inherited = image.health.clone().unwrap_or_default();
                let or_image = |v: i64, from_image: i64| if v == 0 { from_image } else { v };
                Some(HealthView {
                    test: h.test.clone(),
                    interval: or_image(nanos(h.interval), inherited.interval),
                    timeout: or_image(nanos(h.timeout), inherited.timeout),
                    retries: or_image(i64::from(h.retries), inherited.retries),
                    start_period: or_image(nanos(h.start_period), inherited.start_period),
                })
            }
            None => image.health.clone(),
        },
        init: false,
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    super::super::docker::nanos(d).unwrap_or(0)
}

/// Every field in which `live` differs from `desired`, concern by concern. Empty when equal.
/// The image is compared by the caller, which knows the reference behind the id.
pub fn compare(desired: &ContainerView, live: &ContainerView) -> Vec<FieldChange> {
    let mut out = Vec::new();
    security(desired, live, &mut out);
    process(desired, live, &mut out);
    resources(desired, live, &mut out);
    storage(desired, live, &mut out);
    network(desired, live, &mut out);
    lifecycle(desired, live, &mut out);
    labels(desired, live, &mut out);
    out
}

/// Pushes a change when two displayable values differ.
fn field<T: PartialEq + ?Sized>(
    out: &mut Vec<FieldChange>,
    path: &str,
    live: &T,
    desired: &T,
    show: impl Fn(&T) -> String,
) {
    if live != desired {
        out.push(FieldChange::changed(path, show(live), show(desired)));
    }
}

fn plain<T: Display>(v: &T) -> String {
    v.to_string()
}

// `field` passes the field's own type to its renderer, and list fields are `Vec`s.
#[allow(clippy::ptr_arg)]
fn list(v: &Vec<String>) -> String {
    format!("[{}]", v.join(", "))
}

fn map(v: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = v.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", items.join(", "))
}

fn user(u: &String) -> String {
    if u.is_empty() {
        "\"\" (root)".to_string()
    } else {
        format!("\"{u}\"")
    }
}

fn mem(m: &i64) -> String {
    match *m {
        0 => "unlimited".to_string(),
        m if m < 0 => m.to_string(),
        m => crate::model::MemSize(u64::try_from(m).unwrap_or(0)).to_string(),
    }
}

fn security(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "spec.user", &l.user, &d.user, user);
    field(out, "spec.privileged", &l.privileged, &d.privileged, plain);
    field(out, "spec.capAdd", &l.cap_add, &d.cap_add, list);
    field(out, "spec.capDrop", &l.cap_drop, &d.cap_drop, list);
    field(
        out,
        "spec.securityOpt",
        &l.security_opt,
        &d.security_opt,
        list,
    );
    field(out, "spec.devices", &l.devices, &d.devices, list);
    field(
        out,
        "spec.readOnlyRootFilesystem",
        &l.read_only,
        &d.read_only,
        plain,
    );
    field(
        out,
        "HostConfig.MaskedPaths",
        &l.masked_paths,
        &d.masked_paths,
        |m| if *m { "masked" } else { "unmasked" }.to_string(),
    );
    field(
        out,
        "HostConfig.Namespaces",
        &l.namespaces,
        &d.namespaces,
        map,
    );
    field(out, "spec.groupAdd", &l.group_add, &d.group_add, list);
    field(out, "HostConfig.Sysctls", &l.sysctls, &d.sysctls, map);
    field(
        out,
        "HostConfig.DeviceCgroupRules",
        &l.device_cgroup_rules,
        &d.device_cgroup_rules,
        list,
    );
    field(out, "HostConfig.Runtime", &l.runtime, &d.runtime, plain);
}

fn process(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "Config.Entrypoint", &l.entrypoint, &d.entrypoint, list);
    field(out, "spec.command", &l.command, &d.command, list);
    environment(&d.env, &l.env, out);
    field(
        out,
        "Config.WorkingDir",
        &l.working_dir,
        &d.working_dir,
        plain,
    );
    field(out, "Config.Hostname", &l.hostname, &d.hostname, plain);
}

/// Per variable. Live values are never shown: a variable set by hand may hold a secret.
fn environment(d: &Env, l: &Env, out: &mut Vec<FieldChange>) {
    for (k, want) in &d.0 {
        let path = format!("spec.environment.{k}");
        match l.0.get(k) {
            None => out.push(FieldChange::added(path, want)),
            Some(have) if have != want => {
                out.push(FieldChange::changed(path, "(another value)", want))
            }
            Some(_) => {}
        }
    }
    for k in l.0.keys().filter(|k| !d.0.contains_key(*k)) {
        out.push(FieldChange::removed(
            format!("spec.environment.{k}"),
            "(set by hand)",
        ));
    }
}

fn resources(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "spec.memory", &l.memory, &d.memory, mem);
    field(
        out,
        "HostConfig.MemorySwap",
        &l.memory_swap,
        &d.memory_swap,
        mem,
    );
    field(out, "HostConfig.Cpu", &l.cpu, &d.cpu, list);
    field(
        out,
        "HostConfig.PidsLimit",
        &l.pids_limit,
        &d.pids_limit,
        plain,
    );
    field(
        out,
        "HostConfig.OomKillDisable",
        &l.oom_kill_disable,
        &d.oom_kill_disable,
        plain,
    );
    field(out, "HostConfig.Ulimits", &l.ulimits, &d.ulimits, list);
    field(
        out,
        "HostConfig.OomScoreAdj",
        &l.oom_score_adj,
        &d.oom_score_adj,
        plain,
    );
    field(out, "HostConfig.ShmSize", &l.shm_size, &d.shm_size, mem);
    field(
        out,
        "HostConfig.CgroupParent",
        &l.cgroup_parent,
        &d.cgroup_parent,
        plain,
    );
}

fn storage(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "spec.mounts", &l.binds, &d.binds, list);
    for (target, want) in &d.mount_sources {
        let have = l.mount_sources.get(target);
        if have != Some(want) {
            let why = match have {
                Some(_) => "the source was replaced since the container was created",
                None => "not recorded when the container was created",
            };
            out.push(FieldChange::changed(
                format!("spec.mounts[{target}].source"),
                have.map_or("(unrecorded)", String::as_str),
                format!("{want} ({why})"),
            ));
        }
    }
    for target in l.mount_sources.keys() {
        if !d.mount_sources.contains_key(target) {
            out.push(FieldChange::removed(
                format!("spec.mounts[{target}].source"),
                "(recorded)",
            ));
        }
    }
    field(out, "spec.tmpfs", &l.tmpfs, &d.tmpfs, map);
    field(
        out,
        "HostConfig.VolumesFrom",
        &l.volumes_from,
        &d.volumes_from,
        list,
    );
}

/// The networks a container of this mode is attached to, as the engine lists them: the
/// default mode's is `bridge`; one sharing another container's stack has none of its own.
fn attached_networks(mode: &str) -> Vec<String> {
    match mode {
        "default" | "" => vec!["bridge".to_string()],
        m if m.starts_with("container:") => Vec::new(),
        m => vec![m.to_string()],
    }
}

fn network(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "spec.network", &l.network, &d.network, plain);
    field(
        out,
        "spec.network (attached)",
        &l.networks,
        &d.networks,
        list,
    );
    field(out, "spec.ports", &l.ports, &d.ports, list);
    field(
        out,
        "HostConfig.PublishAllPorts",
        &l.publish_all_ports,
        &d.publish_all_ports,
        plain,
    );
    field(
        out,
        "HostConfig.ExtraHosts",
        &l.extra_hosts,
        &d.extra_hosts,
        list,
    );
    field(out, "HostConfig.Dns", &l.dns, &d.dns, list);
}

fn lifecycle(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    field(out, "spec.restart", &l.restart, &d.restart, plain);
    field(out, "spec.healthCheck", &l.health, &d.health, |h| match h {
        Some(h) => h.to_string(),
        None => "none".to_string(),
    });
    field(out, "HostConfig.Init", &l.init, &d.init, plain);
}

/// Per label: an extra label counts like a changed one.
fn labels(d: &ContainerView, l: &ContainerView, out: &mut Vec<FieldChange>) {
    for (k, want) in &d.labels {
        let path = format!("metadata.labels[{k}]");
        match l.labels.get(k) {
            None => out.push(FieldChange::added(path, short(want))),
            Some(have) if have != want => {
                out.push(FieldChange::changed(path, short(have), short(want)))
            }
            Some(_) => {}
        }
    }
    for (k, have) in &l.labels {
        if !d.labels.contains_key(k) {
            out.push(FieldChange::removed(format!("metadata.labels[{k}]"), have));
        }
    }
}

/// Digests (the config hash) shortened for people.
fn short(s: &str) -> &str {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        &s[..12]
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A realistic converged container: every list and map holds something, so that both
    /// "extra item" and "missing item" are meaningful.
    fn base() -> ContainerView {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        ContainerView {
            image: "sha256:aaaa".into(),
            entrypoint: s(&["/stub"]),
            command: s(&["-config.file=/etc/svc.yaml"]),
            env: Env(m(&[("GF_PATHS_CONFIG", "/etc/grafana/grafana.ini")])),
            working_dir: "/".into(),
            hostname: "grafana".into(),
            labels: m(&[("stackwarden.stack", "observability")]),
            user: "10001:10001".into(),
            privileged: false,
            cap_add: vec![],
            cap_drop: s(&["ALL"]),
            security_opt: s(&["no-new-privileges"]),
            devices: s(&["/dev/kmsg:/dev/kmsg:r"]),
            read_only: true,
            masked_paths: true,
            namespaces: BTreeMap::new(),
            group_add: vec![],
            sysctls: BTreeMap::new(),
            device_cgroup_rules: vec![],
            runtime: String::new(),
            memory: 384 << 20,
            memory_swap: 0,
            cpu: vec![],
            pids_limit: 0,
            oom_kill_disable: false,
            ulimits: vec![],
            oom_score_adj: 0,
            shm_size: 0,
            cgroup_parent: String::new(),
            binds: s(&["/r/grafana/grafana.ini:/etc/grafana/grafana.ini:ro"]),
            mount_sources: m(&[("/etc/grafana/grafana.ini", "2049:77")]),
            tmpfs: BTreeMap::new(),
            volumes_from: vec![],
            network: "none".into(),
            networks: s(&["none"]),
            ports: vec![],
            publish_all_ports: false,
            extra_hosts: vec![],
            dns: vec![],
            restart: "unless-stopped".into(),
            health: Some(HealthView {
                test: s(&["CMD", "wget", "-q", "http://127.0.0.1:3001/api/health"]),
                interval: 15_000_000_000,
                timeout: 3_000_000_000,
                retries: 3,
                start_period: 0,
            }),
            init: false,
        }
    }

    type Mutation = Box<dyn Fn(&mut ContainerView)>;

    /// The cases, one per field of the view: the macro also destructures the view with the
    /// same field list and no `..`, so a field added without a case does not compile.
    macro_rules! cases {
        ($($field:ident => $path:literal, |$v:ident| $mutate:expr;)*) => {{
            let ContainerView { $($field: _,)* } = base();
            vec![$(($path, stringify!($field), Box::new(|$v: &mut ContainerView| { $mutate; }) as Mutation)),*]
        }};
    }

    fn cases() -> Vec<(&'static str, &'static str, Mutation)> {
        cases! {
            image => "(image: the caller's)", |v| v.image = "sha256:bbbb".into();
            entrypoint => "Config.Entrypoint", |v| v.entrypoint = vec!["/bin/sh".into()];
            command => "spec.command", |v| v.command.push("-debug".into());
            env => "spec.environment.GF_AUTH_ANONYMOUS_ENABLED", |v| {
                v.env.0.insert("GF_AUTH_ANONYMOUS_ENABLED".into(), "true".into());
            };
            working_dir => "Config.WorkingDir", |v| v.working_dir = "/tmp".into();
            hostname => "Config.Hostname", |v| v.hostname = "other".into();
            labels => "metadata.labels[extra]", |v| {
                v.labels.insert("extra".into(), "1".into());
            };
            user => "spec.user", |v| v.user = "0".into();
            privileged => "spec.privileged", |v| v.privileged = true;
            cap_add => "spec.capAdd", |v| v.cap_add.push("CAP_SYS_ADMIN".into());
            cap_drop => "spec.capDrop", |v| v.cap_drop.clear();
            security_opt => "spec.securityOpt", |v| v.security_opt.push("seccomp=unconfined".into());
            devices => "spec.devices", |v| v.devices.push("/dev/mem:/dev/mem:rwm".into());
            read_only => "spec.readOnlyRootFilesystem", |v| v.read_only = false;
            masked_paths => "HostConfig.MaskedPaths", |v| v.masked_paths = false;
            namespaces => "HostConfig.Namespaces", |v| {
                v.namespaces.insert("pid".into(), "host".into());
            };
            group_add => "spec.groupAdd", |v| v.group_add.push("0".into());
            sysctls => "HostConfig.Sysctls", |v| {
                v.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
            };
            device_cgroup_rules => "HostConfig.DeviceCgroupRules", |v| {
                v.device_cgroup_rules.push("c *:* rwm".into());
            };
            runtime => "HostConfig.Runtime", |v| v.runtime = "runsc".into();
            memory => "spec.memory", |v| v.memory = 0;
            memory_swap => "HostConfig.MemorySwap", |v| v.memory_swap = 1 << 30;
            cpu => "HostConfig.Cpu", |v| v.cpu.push("shares=2048".into());
            pids_limit => "HostConfig.PidsLimit", |v| v.pids_limit = 10;
            oom_kill_disable => "HostConfig.OomKillDisable", |v| v.oom_kill_disable = true;
            ulimits => "HostConfig.Ulimits", |v| v.ulimits.push("nofile=1:1".into());
            oom_score_adj => "HostConfig.OomScoreAdj", |v| v.oom_score_adj = -1000;
            shm_size => "HostConfig.ShmSize", |v| v.shm_size = 1 << 30;
            cgroup_parent => "HostConfig.CgroupParent", |v| v.cgroup_parent = "/escape".into();
            binds => "spec.mounts", |v| v.binds.push("/:/host".into());
            mount_sources => "spec.mounts[/etc/grafana/grafana.ini].source", |v| {
                v.mount_sources.insert("/etc/grafana/grafana.ini".into(), "2049:78".into());
            };
            tmpfs => "spec.tmpfs", |v| {
                v.tmpfs.insert("/tmp".into(), "exec".into());
            };
            volumes_from => "HostConfig.VolumesFrom", |v| v.volumes_from.push("other".into());
            network => "spec.network", |v| v.network = "host".into();
            networks => "spec.network (attached)", |v| v.networks = vec!["bridge".into()];
            ports => "spec.ports", |v| v.ports.push("0.0.0.0:3001->3001/tcp".into());
            extra_hosts => "HostConfig.ExtraHosts", |v| v.extra_hosts.push("x:1.2.3.4".into());
            publish_all_ports => "HostConfig.PublishAllPorts", |v| v.publish_all_ports = true;
            dns => "HostConfig.Dns", |v| v.dns.push("8.8.8.8".into());
            restart => "spec.restart", |v| v.restart = "no".into();
            health => "spec.healthCheck", |v| v.health = None;
            init => "HostConfig.Init", |v| v.init = true;
        }
    }

    #[test]
    fn equal_views_differ_in_nothing() {
        assert_eq!(compare(&base(), &base()), vec![]);
    }

    #[test]
    fn a_hand_made_change_to_any_field_of_the_view_is_seen() {
        for (path, name, mutate) in cases() {
            let mut live = base();
            mutate(&mut live);
            assert_ne!(live, base(), "case {name} changes nothing");
            let changes = compare(&base(), &live);
            if name == "image" {
                // Compared by the caller against the reference; nothing else moves.
                assert!(changes.is_empty(), "{name}: {changes:?}");
                continue;
            }
            assert!(
                changes.iter().any(|c| c.path == path),
                "{name}: a change is not seen at {path}: {changes:?}"
            );
        }
    }

    #[test]
    fn extra_items_in_lists_and_maps_count_and_live_env_values_stay_hidden() {
        let mut live = base();
        live.env.0.insert(
            "GF_SECURITY_ADMIN_PASSWORD".into(),
            "hunter2-by-hand".into(),
        );
        live.env
            .0
            .insert("GF_PATHS_CONFIG".into(), "/elsewhere-by-hand".into());
        let changes = compare(&base(), &live);
        let shown = format!("{changes:?}");
        assert!(
            !shown.contains("hunter2-by-hand") && !shown.contains("/elsewhere-by-hand"),
            "{shown}"
        );
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.environment.GF_PATHS_CONFIG",
                "spec.environment.GF_SECURITY_ADMIN_PASSWORD"
            ]
        );
    }

    #[test]
    fn a_root_privileged_container_shows_each_field() {
        let mut live = base();
        live.user = "0".into();
        live.privileged = true;
        live.security_opt.clear();
        live.memory = 0;
        let paths: Vec<String> = compare(&base(), &live)
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.user",
                "spec.privileged",
                "spec.securityOpt",
                "spec.memory"
            ]
        );
    }

    #[test]
    fn the_image_fills_in_what_the_spec_leaves_unset() {
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "stub:local", "memory": "64M",
            "environment": {"PATH": {"value": "/bin"}, "A": {"value": "1"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let image = ImageInfo {
            id: "sha256:1".into(),
            entrypoint: vec!["/stub".into()],
            command: vec!["serve".into()],
            env: [("PATH".to_string(), "/bin".to_string())].into(),
            user: "65534".into(),
            ..Default::default()
        };
        let v = desired_view(
            "svc",
            &spec,
            Some(&image),
            &[],
            BTreeMap::new(),
            BTreeMap::new(),
        );
        assert_eq!(
            (v.entrypoint, v.command, v.user),
            (
                vec!["/stub".into()],
                vec!["serve".into()],
                "65534".to_string()
            )
        );
        assert_eq!(v.env.0.keys().collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn a_health_check_takes_what_it_leaves_at_zero_from_the_image() {
        // stackwarden's own image has a start period; its manifest declares none.
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "stub:local", "memory": "64M",
            "healthCheck": {"test": ["CMD", "true"], "interval": "1s", "timeout": "2s", "retries": 3}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let image = ImageInfo {
            id: "sha256:1".into(),
            health: Some(HealthView {
                test: vec!["CMD".into(), "false".into()],
                interval: 30_000_000_000,
                timeout: 5_000_000_000,
                retries: 5,
                start_period: 10_000_000_000,
            }),
            ..Default::default()
        };
        let v = desired_view(
            "svc",
            &spec,
            Some(&image),
            &[],
            BTreeMap::new(),
            BTreeMap::new(),
        );
        assert_eq!(
            v.health,
            Some(HealthView {
                test: vec!["CMD".into(), "true".into()],
                interval: 1_000_000_000,
                timeout: 2_000_000_000,
                retries: 3,
                start_period: 10_000_000_000,
            })
        );
    }
}
