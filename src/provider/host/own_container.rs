//! The container this process runs in, if any. On the host, stackwarden's daemon is itself
//! one of the stack's containers; removing, replacing or restarting that container from
//! inside would end the process halfway through its own repair (and a replace would never
//! create the new one). A daemon holding the stack's lease hands a replace over to a
//! successor instead (`handoff`); a removal, a restart, and any of them by `apply` run
//! inside it, are refused and left to an `apply` from outside: CI, or a person on the host.

/// The Docker id of the container this process runs in, from `/proc/self`; `None` outside
/// one (or where the kernel does not tell).
pub fn current() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    from_proc(&mountinfo, &cgroup)
}

/// Files Docker bind-mounts into every container from the container's own directory
/// (`<data-root>/containers/<id>/`).
const PER_CONTAINER_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// The container id named by `mountinfo` (Docker's per-container files, mounted at their
/// usual places) or else by `cgroup` (cgroup v1, or v2 without a private namespace).
pub fn from_proc(mountinfo: &str, cgroup: &str) -> Option<String> {
    // Fields: id parent major:minor root mount-point …; the root is the source's path
    // inside its file system. On the host itself, those files are no bind mounts, and the
    // containers' own mounts (shm) are elsewhere: no false match.
    let from_mounts = mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        if !PER_CONTAINER_FILES.contains(&point) {
            return None;
        }
        id_after(root, "/containers/")
    });
    from_mounts.or_else(|| {
        cgroup.lines().find_map(|line| {
            let path = line.splitn(3, ':').nth(2)?;
            id_after(path, "/docker/").or_else(|| id_after(path, "/docker-"))
        })
    })
}

/// The 64-hex-digit id that follows `marker` in `path`, ended by `/`, `.` or the end.
fn id_after(path: &str, marker: &str) -> Option<String> {
    path.match_indices(marker).find_map(|(at, _)| {
        let rest = &path[at + marker.len()..];
        let id = rest.get(..64)?;
        let ended = matches!(rest[64..].chars().next(), None | Some('/') | Some('.'));
        (ended && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1d6f0c5b2a4e8d9c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d";

    #[test]
    fn a_container_is_known_by_its_hostname_mount() {
        let mountinfo = format!(
            "700 600 0:52 / / rw,relatime - overlay overlay rw\n\
             812 700 253:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(from_proc(&mountinfo, "0::/\n").as_deref(), Some(ID));
    }

    #[test]
    fn a_data_root_on_its_own_file_system_still_names_the_container() {
        let mountinfo = format!(
            "812 700 253:2 /containers/{ID}/resolv.conf /etc/resolv.conf rw - xfs /dev/vdb rw\n"
        );
        assert_eq!(from_proc(&mountinfo, "").as_deref(), Some(ID));
    }

    #[test]
    fn the_host_with_containers_running_is_in_none() {
        // The host sees each container's shm mount, never a bind over its own /etc files.
        let mountinfo = format!(
            "30 1 253:1 / / rw - ext4 /dev/vda rw\n\
             90 30 0:60 / /var/lib/docker/containers/{ID}/mounts/shm rw - tmpfs shm rw\n"
        );
        assert_eq!(from_proc(&mountinfo, "0::/user.slice/user-0.slice\n"), None);
    }

    #[test]
    fn cgroup_v1_and_systemd_scopes_name_the_container() {
        assert_eq!(
            from_proc("", &format!("12:memory:/docker/{ID}\n")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            from_proc("", &format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn a_path_that_only_looks_like_an_id_is_not_one() {
        let short = &ID[..63];
        assert_eq!(from_proc("", &format!("12:memory:/docker/{short}\n")), None);
        assert_eq!(from_proc("", &format!("12:memory:/docker/{ID}0\n")), None);
        let not_hex = ID.replace('f', "g");
        assert_eq!(
            from_proc("", &format!("12:memory:/docker/{not_hex}\n")),
            None
        );
    }
}
