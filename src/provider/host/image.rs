//! Image references: `repo[:tag]` and `repo[:tag]@sha256:…`, as pulled and as compared. A
//! reference pinned by digest is pulled by that digest and matches only an image carrying it
//! (never `repo:latest`). No I/O.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Repository, with registry and port if given (`localhost:5000/x`).
    pub repo: &'a str,
    /// Tag, if given.
    pub tag: Option<&'a str>,
    /// Content digest (`sha256:…`), if pinned.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Parses a reference; a registry port is not a tag.
    pub fn parse(reference: &'a str) -> ImageRef<'a> {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        let (repo, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
            _ => (name, None),
        };
        ImageRef { repo, tag, digest }
    }

    /// What to pull: the repository and the API's `tag` parameter, which takes a digest too.
    /// An empty tag would pull every tag of the repository, so a bare name means `latest`.
    pub fn pull_args(&self) -> (&'a str, &'a str) {
        (self.repo, self.digest.or(self.tag).unwrap_or("latest"))
    }

    /// True when a local image with these repository digests is the one this reference
    /// names. A tag-only reference is resolved by the engine (any local image it finds); a
    /// pinned one must carry `repo@digest` itself, so a retagged image never passes for it.
    pub fn is_satisfied_by(&self, repo_digests: &[String]) -> bool {
        let Some(digest) = self.digest else {
            return true;
        };
        repo_digests.iter().any(|rd| match rd.split_once('@') {
            Some((repo, d)) => d == digest && same_repo(repo, self.repo),
            None => false,
        })
    }
}

/// Repositories compare with Docker Hub's implicit prefixes removed (`docker.io/library/x` =
/// `x`).
fn same_repo(a: &str, b: &str) -> bool {
    fn bare(r: &str) -> &str {
        let r = r.strip_prefix("docker.io/").unwrap_or(r);
        r.strip_prefix("library/").unwrap_or(r)
    }
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4c1d3b2a9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b";

    #[test]
    fn tagged_references_split_into_repo_and_tag() {
        let r = ImageRef::parse("stackwarden/stub:local");
        assert_eq!(
            (r.repo, r.tag, r.digest),
            ("stackwarden/stub", Some("local"), None)
        );
        assert_eq!(r.pull_args(), ("stackwarden/stub", "local"));
        assert_eq!(
            ImageRef::parse("grafana/grafana").pull_args(),
            ("grafana/grafana", "latest")
        );
        let port = ImageRef::parse("localhost:5000/x");
        assert_eq!((port.repo, port.tag), ("localhost:5000/x", None));
    }

    #[test]
    fn a_digest_pinned_reference_is_pulled_by_digest_not_latest() {
        let reference = format!("stub@{DIGEST}");
        let r = ImageRef::parse(&reference);
        assert_eq!((r.repo, r.tag, r.digest), ("stub", None, Some(DIGEST)));
        assert_eq!(r.pull_args(), ("stub", DIGEST));
        let both = format!("localhost:5000/grafana/grafana:11.0@{DIGEST}");
        let r = ImageRef::parse(&both);
        assert_eq!(
            (r.repo, r.tag, r.digest),
            ("localhost:5000/grafana/grafana", Some("11.0"), Some(DIGEST))
        );
        assert_eq!(r.pull_args().1, DIGEST);
    }

    #[test]
    fn a_digest_pinned_reference_matches_only_an_image_carrying_that_digest() {
        let reference = format!("stub@{DIGEST}");
        let r = ImageRef::parse(&reference);
        assert!(r.is_satisfied_by(&[format!("stub@{DIGEST}")]));
        assert!(r.is_satisfied_by(&[format!("docker.io/library/stub@{DIGEST}")]));
        // An image retagged to the same name but with other content does not satisfy it.
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert!(!r.is_satisfied_by(&[format!("stub@{other}")]));
        assert!(!r.is_satisfied_by(&[format!("other@{DIGEST}")]));
        // `docker import` gives no repository digest at all.
        assert!(!r.is_satisfied_by(&[]));
        assert!(ImageRef::parse("stub:local").is_satisfied_by(&[]));
    }
}
