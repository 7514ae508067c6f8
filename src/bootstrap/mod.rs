//! The user data a new instance boots with, rendered from its Instance's `bootstrap`
//! (docs/bootstrap.md): the settings as shell variables, then `user-data.sh`, which installs
//! Docker, fetches the digest-pinned artifact from the bucket, checks it and applies the host
//! side once from the published source; the daemon that apply starts keeps the host after.
//! Pure: the same desired state renders the same bytes, so the launch tag's hash of them
//! tells when they changed.

use crate::model::{ArtifactKind, Bootstrap, Desired, InstanceSpec};

/// The script the settings are put in front of.
const SCRIPT: &str = include_str!("user-data.sh");

/// The user data `spec` launches with: its own `userData`, or its rendered `bootstrap`.
pub fn user_data(desired: &Desired, spec: &InstanceSpec) -> Option<String> {
    match &spec.bootstrap {
        Some(b) => Some(render(desired, b)),
        None => spec.user_data.clone(),
    }
}

/// The bucket name a bootstrap names (its Bucket's, by manifest name).
fn bucket_of(desired: &Desired, b: &Bootstrap) -> String {
    desired
        .buckets()
        .find(|(r, _)| r.id.name == b.bucket)
        .map_or_else(|| b.bucket.clone(), |(_, s)| s.name.clone())
}

/// Where a bootstrap's artifact must be: `s3://BUCKET/PREFIX/artifacts/SHA256`.
pub fn artifact_url(desired: &Desired, b: &Bootstrap) -> String {
    format!(
        "s3://{}/{}/artifacts/{}",
        bucket_of(desired, b),
        b.prefix.trim_matches('/'),
        b.sha256.to_ascii_lowercase()
    )
}

/// The artifacts the declared instances pin (`none` pins nothing), as [`artifact_url`]s.
pub fn pinned_artifacts(desired: &Desired) -> Vec<String> {
    let mut out: Vec<String> = desired
        .instances()
        .filter_map(|(_, s)| s.bootstrap.as_ref())
        .filter(|b| b.artifact != ArtifactKind::None)
        .map(|b| artifact_url(desired, b))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The settings, in the order the script reads them.
fn settings(desired: &Desired, b: &Bootstrap) -> Vec<(&'static str, String)> {
    let bucket = bucket_of(desired, b);
    let mut out = vec![
        ("STACKWARDEN_ENV", desired.environment.clone()),
        ("STACKWARDEN_REGION", desired.stack.region.clone()),
        ("STACKWARDEN_BUCKET", bucket),
        ("STACKWARDEN_PREFIX", b.prefix.trim_matches('/').to_string()),
        ("STACKWARDEN_HOST_ROOT", b.host_root.clone()),
        ("STACKWARDEN_ARTIFACT", b.artifact.as_str().to_string()),
    ];
    if b.artifact != ArtifactKind::None {
        out.extend([
            ("STACKWARDEN_SHA256", b.sha256.to_ascii_lowercase()),
            ("STACKWARDEN_TRUST", b.trust.trim().to_string()),
            ("STACKWARDEN_CONTAINER", b.container.clone()),
        ]);
    }
    out
}

/// `bootstrap` rendered: a shebang, the settings, the script after its own shebang.
pub fn render(desired: &Desired, b: &Bootstrap) -> String {
    let mut out = String::from(
        "#!/bin/bash\n# Rendered by stackwarden from the Instance's bootstrap (docs/bootstrap.md).\n",
    );
    for (name, value) in settings(desired, b) {
        out.push_str(&format!("export {name}={}\n", quote(&value)));
    }
    let body = SCRIPT.split_once('\n').map_or(SCRIPT, |(_, rest)| rest);
    out.push_str(body);
    out
}

/// A shell word that stands for exactly `s`: single quotes, each `'` inside closed, escaped
/// and reopened.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_character_literal() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's $HOME `x`"), r"'it'\''s $HOME `x`'");
        assert_eq!(quote("two\nlines"), "'two\nlines'");
    }

    /// Blocker B4 of the field: the instance's user data must not change with stackwarden's
    /// own image, or every upgrade would replace the instance.
    #[test]
    fn a_new_stackwarden_image_leaves_the_user_data_as_it_was() {
        let mut desired = crate::manifest::load(std::path::Path::new("manifests"), Some("staging"))
            .expect("the shipped manifests load")
            .desired;
        let (_, spec) = desired.instances().next().expect("an instance is declared");
        let spec = spec.clone();
        let before = user_data(&desired, &spec).expect("staging bootstraps");
        let mut moved = 0;
        for r in &mut desired.resources {
            if let crate::model::Spec::Container(c) = &mut r.spec
                && r.id.name == "stackwarden"
            {
                c.image = "ghcr.io/durable-code/stackwarden:9.9.9".to_string();
                moved += 1;
            }
        }
        assert_eq!(
            moved, 1,
            "the shipped manifests declare Container/stackwarden"
        );
        assert_eq!(user_data(&desired, &spec), Some(before));
    }

    #[test]
    fn the_script_starts_with_a_shebang_the_render_replaces() {
        assert!(SCRIPT.starts_with("#!/bin/bash\n"));
    }
}
