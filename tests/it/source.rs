//! Signed delivery through the stack's bucket (docs/delivery.md): publish, follow, refuse.
//! Against a moto server on loopback through the real SDK and the S3 client builder the
//! commands use; keys are generated at test time. Every refusal leaves the last good revision
//! in force, files and all.

use crate::support::cli::{Cli, text};
use crate::support::files::{copy_dir, edit_loki_memory, repo};
use crate::support::moto::Moto;
use stackwarden::source::fetch::{
    FetchError, MAX_EXPIRY_HORIZON, MAX_REVISION_JUMP, Options, Poll, Rejection, Remote,
};
use stackwarden::source::pointer::{BundleRef, Pointer, Publisher, Time};
use stackwarden::source::publish::{self, PublishError, Published, Request};
use stackwarden::source::signing::{self, SigningKey};
use stackwarden::source::{Location, bundle, snapshot};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

const ENV: &str = "local";
const BUCKET: &str = "durable-code-local-observability-123456789012";

/// A copy of the repository's desired state (manifests and the files they read), outside any
/// git work tree: its root is the directory holding `manifests/`.
fn copy_of_repo(dir: &Path) -> PathBuf {
    for sub in ["manifests", "config", "dashboards", "alerting"] {
        copy_dir(&repo().join(sub), &dir.join(sub));
    }
    dir.join("manifests")
}

/// A moto with the stack's bucket, a key pair, a state directory.
struct World {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    location: Location,
    key: SigningKey,
    keys: tempfile::TempDir,
    state: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let moto = Moto::start_bare().await;
        let s3 = stackwarden::provider::aws::s3_client(&moto.sdk_config().await);
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (secret, _) = signing::generate(keys.path()).unwrap();
        World {
            moto,
            s3,
            location: Location::new(BUCKET, "stackwarden", ENV),
            key: SigningKey::from_file(&secret).unwrap(),
            keys,
            state: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn remote(&self) -> Remote {
        Remote::open(
            self.s3.clone(),
            Options::new(
                self.location.clone(),
                self.state.path().join("source"),
                self.key.trusted(),
            ),
        )
        .expect("the state directory opens")
    }

    async fn publish_at(&self, manifests: &Path, now: SystemTime) -> Published {
        let built = bundle::build(manifests, Some(ENV), None).expect("the tree bundles");
        publish::publish(
            &self.s3,
            Request {
                location: &self.location,
                bundle: &built,
                key: &self.key,
                publisher: Publisher {
                    commit: Some("c0ffee".into()),
                    run: Some("7".into()),
                },
                expires_in: Duration::from_secs(7 * 24 * 3600),
                now,
                recover: false,
            },
        )
        .await
        .expect("publish")
    }

    /// Publishes `manifests` now, `recover` as `publish --recover` sets it.
    async fn try_publish(
        &self,
        manifests: &Path,
        recover: bool,
    ) -> Result<Published, PublishError> {
        let built = bundle::build(manifests, Some(ENV), None).expect("the tree bundles");
        publish::publish(
            &self.s3,
            Request {
                location: &self.location,
                bundle: &built,
                key: &self.key,
                publisher: Publisher::default(),
                expires_in: Duration::from_secs(7 * 24 * 3600),
                now: SystemTime::now(),
                recover,
            },
        )
        .await
    }

    async fn publish(&self, manifests: &Path) -> Published {
        self.publish_at(manifests, SystemTime::now()).await
    }

    /// A copy of the repository with loki's memory edited (a second, different revision).
    fn edited_tree(&self, name: &str, memory: &str) -> PathBuf {
        let manifests = copy_of_repo(&self.scratch.path().join(name));
        edit_loki_memory(&manifests, memory);
        manifests
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Signs and writes a pointer to an archive uploaded as-is (hostile or not).
    async fn offer_archive(&self, revision: u64, archive: Vec<u8>) {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&archive));
        let size = archive.len() as u64;
        self.put(&self.location.bundle_key(&sha256), archive).await;
        self.offer(
            &self.pointer(revision, BundleRef { sha256, size }),
            &self.key,
        )
        .await;
    }

    fn pointer(&self, revision: u64, bundle: BundleRef) -> Pointer {
        let now = SystemTime::now();
        Pointer {
            format: 1,
            env: ENV.to_string(),
            revision,
            bundle,
            published_at: Time(now),
            expires_at: Time(now + Duration::from_secs(3600)),
            publisher: Publisher::default(),
        }
    }

    async fn offer(&self, pointer: &Pointer, key: &SigningKey) {
        self.put(&self.location.pointer_key(), pointer.seal(key).unwrap())
            .await;
    }
}

/// A world with revision 1 (the repository's manifests) in force.
async fn in_force_at_one() -> (World, Remote) {
    let world = World::new().await;
    let published = world.publish(&repo().join("manifests")).await;
    assert_eq!(published.revision, 1);
    let mut remote = world.remote();
    match remote.poll(SystemTime::now()).await {
        Poll::Updated { revision: 1, .. } => {}
        other => panic!("revision 1 was not taken: {other:?}"),
    }
    (world, remote)
}

/// Revision 1 is still in force, its files where they were.
fn still_at_one(remote: &Remote) {
    let f = remote.in_force().expect("a revision in force");
    assert_eq!(f.revision(), 1);
    assert!(
        f.manifests.join("stack.yaml").is_file(),
        "{:?}",
        f.manifests
    );
    stackwarden::manifest::load_in(&f.manifests, Some(ENV), Some(&f.tree))
        .expect("the revision in force still validates");
    assert_eq!(remote.status().revision, Some(1));
}

/// A bundle no object in the bucket holds, of `size` bytes: for refusals made from the
/// pointer alone.
fn absent_bundle(size: u64) -> BundleRef {
    BundleRef {
        sha256: "0".repeat(64),
        size,
    }
}

fn refused(poll: Poll) -> Rejection {
    match poll {
        Poll::Rejected { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_published_revision_is_verified_swapped_in_and_survives_a_restart() {
    let (world, mut remote) = in_force_at_one().await;
    let f = remote.in_force().unwrap().clone();
    let loaded = stackwarden::manifest::load_in(&f.manifests, Some(ENV), Some(&f.tree))
        .expect("the unpacked bundle validates");
    let here = stackwarden::manifest::load(&repo().join("manifests"), Some(ENV)).unwrap();
    assert_eq!(
        loaded.desired.resources.len(),
        here.desired.resources.len(),
        "the bundle carries the whole desired state"
    );
    let status = remote.status().clone();
    assert!(status.verified);
    assert_eq!(status.publisher.unwrap().commit.as_deref(), Some("c0ffee"));
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Unchanged
    ));

    // A restart: the revision in force is read back from the state directory.
    drop(remote);
    let mut remote = world.remote();
    assert_eq!(remote.in_force().map(|f| f.revision()), Some(1));
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Unchanged
    ));

    // An edit, published, is the next revision.
    let edited = world.edited_tree("edit", "400M");
    assert_eq!(world.publish(&edited).await.revision, 2);
    match remote.poll(SystemTime::now()).await {
        Poll::Updated {
            revision: 2,
            manifests,
            ..
        } => {
            let text = std::fs::read_to_string(manifests.join("host/containers.yaml")).unwrap();
            assert!(text.contains("memory: 400M"), "the edit arrived");
        }
        other => panic!("revision 2 was not taken: {other:?}"),
    }
}

#[tokio::test]
async fn two_bundles_of_the_same_tree_have_the_same_digest() {
    let scratch = tempfile::tempdir().unwrap();
    let here = bundle::build(&repo().join("manifests"), Some(ENV), None).unwrap();
    // A copy has other inodes, times and owners: none of it reaches the bytes.
    let copy = copy_of_repo(&scratch.path().join("copy"));
    let there = bundle::build(&copy, Some(ENV), None).unwrap();
    assert_eq!(here.sha256, there.sha256);
    assert_eq!(here.bytes, there.bytes);
    assert!(
        here.files.iter().any(|f| f == "dashboards/home.json"),
        "sources are bundled: {:?}",
        here.files
    );
    edit_loki_memory(&copy, "400M");
    assert_ne!(
        bundle::build(&copy, Some(ENV), None).unwrap().sha256,
        here.sha256
    );
}

#[tokio::test]
async fn a_tree_that_does_not_validate_is_not_bundled() {
    let scratch = tempfile::tempdir().unwrap();
    let copy = copy_of_repo(scratch.path());
    std::fs::write(
        copy.join("broken.yaml"),
        "apiVersion: stackwarden.io/v1\nkind: Nope\n",
    )
    .unwrap();
    let err = bundle::build(&copy, Some(ENV), None).expect_err("invalid");
    assert!(matches!(err, bundle::BundleError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn modified_bundle_bytes_are_refused_the_last_good_revision_stays_and_a_publish_repairs_them()
{
    let (world, mut remote) = in_force_at_one().await;
    let edited = world.edited_tree("edit", "400M");
    let two = world.publish(&edited).await;
    let key = world.location.bundle_key(&two.pointer.bundle.sha256);
    let mut bytes = world.get(&key).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    world.put(&key, bytes).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    assert!(
        matches!(reason, Rejection::DigestMismatch { .. }),
        "{reason}"
    );
    still_at_one(&remote);
    let shown = remote.status().rejected.clone().expect("the refusal shows");
    assert_eq!(shown.revision, Some(2));

    // Publishing the same tree again finds the bundle's name taken by other bytes and puts
    // it right; the next revision is taken.
    let three = world.publish(&edited).await;
    assert!(three.uploaded, "the replaced bundle was put back");
    assert_eq!(three.pointer.bundle, two.pointer.bundle);
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 3, .. }
    ));
    assert!(remote.status().rejected.is_none());
}

#[tokio::test]
async fn a_pointer_signed_by_another_key_is_refused() {
    let (world, mut remote) = in_force_at_one().await;
    let other_dir = tempfile::tempdir().unwrap();
    let (secret, _) = signing::generate(other_dir.path()).unwrap();
    let other = SigningKey::from_file(&secret).unwrap();
    let current = world.pointer(1, remote.in_force().unwrap().pointer.bundle.clone());
    let forged = Pointer {
        revision: 2,
        ..current
    };
    world.offer(&forged, &other).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    match &reason {
        Rejection::BadSignature { why } => assert!(why.contains(&other.id()), "{why}"),
        other => panic!("{other}"),
    }
    still_at_one(&remote);
}

#[tokio::test]
async fn an_older_pointer_replayed_is_refused_as_a_rollback() {
    let (world, mut remote) = in_force_at_one().await;
    let first = world.get(&world.location.pointer_key()).await;
    world.publish(&world.edited_tree("edit", "400M")).await;
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 2, .. }
    ));
    world.put(&world.location.pointer_key(), first).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    assert_eq!(
        reason,
        Rejection::Rollback {
            in_force: 2,
            offered: 1
        }
    );
    assert_eq!(remote.in_force().unwrap().revision(), 2);
    // And after a restart too: the revision in force is persisted.
    let mut restarted = world.remote();
    let reason = refused(restarted.poll(SystemTime::now()).await);
    assert!(
        matches!(reason, Rejection::Rollback { in_force: 2, .. }),
        "{reason}"
    );
}

/// A pointer signed with the real key at the last revision number there is would leave no
/// number for any later revision; one far ahead is refused, the revision in force stays.
#[tokio::test]
async fn a_pointer_jumping_far_ahead_is_refused_even_signed_with_the_real_key() {
    let (world, mut remote) = in_force_at_one().await;
    // Refused from the pointer alone: no bundle is ever downloaded for it.
    let bundle = absent_bundle(1);
    for revision in [u64::MAX, 1 + MAX_REVISION_JUMP + 1] {
        world
            .offer(&world.pointer(revision, bundle.clone()), &world.key)
            .await;
        let reason = refused(remote.poll(SystemTime::now()).await);
        assert!(
            matches!(reason, Rejection::Jump { in_force: 1, offered, .. } if offered == revision),
            "{reason}"
        );
        still_at_one(&remote);
    }
}

/// A pointer that says it stays fresh for years is refused: a leaked key could otherwise
/// keep hosts on its revision after every honest one expired.
#[tokio::test]
async fn a_pointer_fresh_beyond_the_horizon_is_refused() {
    let (world, mut remote) = in_force_at_one().await;
    let mut pointer = world.pointer(2, absent_bundle(1));
    pointer.expires_at = Time(SystemTime::now() + MAX_EXPIRY_HORIZON + Duration::from_secs(86_400));
    world.offer(&pointer, &world.key).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    assert!(
        matches!(reason, Rejection::TooFarExpiry { revision: 2, .. }),
        "{reason}"
    );
    still_at_one(&remote);
}

#[tokio::test]
async fn an_expired_pointer_is_refused_and_one_expiring_in_force_turns_stale() {
    let (world, mut remote) = in_force_at_one().await;
    let edited = world.edited_tree("edit", "400M");
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    world.publish_at(&edited, long_ago).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    assert!(
        matches!(reason, Rejection::Expired { revision: 2, .. }),
        "{reason}"
    );
    still_at_one(&remote);

    // Revision 1's own pointer expires (its publisher went quiet): it stays, stale.
    let mut fresh = World::new().await;
    fresh.state = tempfile::tempdir().unwrap();
    fresh.publish(&repo().join("manifests")).await;
    let mut remote = fresh.remote();
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 1, .. }
    ));
    let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
    match remote.poll(later).await {
        Poll::Stale { revision: 1, .. } => {}
        other => panic!("expected stale, got {other:?}"),
    }
    assert!(remote.status().stale);
    still_at_one(&remote);
}

#[tokio::test]
async fn an_unreachable_bucket_keeps_the_revision_in_force_and_following_resumes_after() {
    let (world, remote) = in_force_at_one().await;
    drop(remote);
    // The same state directory, the bucket's endpoint gone (nothing listens on port 1).
    let gone = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url("http://127.0.0.1:1")
        .load()
        .await;
    let mut cut_off = Remote::open(
        stackwarden::provider::aws::s3_client(&gone),
        Options::new(
            world.location.clone(),
            world.state.path().join("source"),
            world.key.trusted(),
        ),
    )
    .unwrap();
    for _ in 0..2 {
        match cut_off.poll(SystemTime::now()).await {
            Poll::Unreachable { .. } => {}
            other => panic!("expected unreachable, got {other:?}"),
        }
        still_at_one(&cut_off);
        assert!(cut_off.status().last_error.is_some());
    }
    drop(cut_off);
    let mut back = world.remote();
    assert!(matches!(
        back.poll(SystemTime::now()).await,
        Poll::Unchanged
    ));
    still_at_one(&back);
    assert_eq!(back.status().last_error, None);
}

/// A tmpfs of a few pages mounted on a fresh directory (the tests run as root), unmounted
/// when dropped: a real disk that fills, with the kernel's own ENOSPC.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk, then frees `room` bytes (whole pages) of it.
    fn fill_leaving(&self, room: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
        const PAGE: u64 = 4096;
        let len = file.metadata().unwrap().len() / PAGE * PAGE;
        file.set_len(len - room.div_ceil(PAGE) * PAGE).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Issue 35: a full state disk was reported as a hostile ("corrupt") archive, and the good
/// revision was remembered as refused and never fetched again.
#[tokio::test]
async fn a_full_state_disk_refuses_nothing_and_the_revision_is_taken_once_space_is_freed() {
    let world = World::new().await;
    let published = world.publish(&repo().join("manifests")).await;
    let disk = SmallDisk::mount(4 << 20);
    let mut remote = Remote::open(
        world.s3.clone(),
        Options::new(
            world.location.clone(),
            disk.path().join("source"),
            world.key.trusted(),
        ),
    )
    .expect("the state directory opens");
    // Room for the download, not for the unpacked tree (many times larger, a page a file).
    let filler = disk.fill_leaving(published.pointer.bundle.size + 8192);

    match remote.poll(SystemTime::now()).await {
        Poll::Unreachable {
            error: FetchError::State { source, .. },
        } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}"),
        other => panic!("a full disk is this host's problem, not the revision's: {other:?}"),
    }
    let status = remote.status();
    assert_eq!(status.rejected, None, "nothing is refused");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("No space left")),
        "{status:?}"
    );
    assert!(remote.in_force().is_none());
    let left: Vec<_> = std::fs::read_dir(disk.path().join("source"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "revisions" && n != "lock")
        .collect();
    assert!(
        left.is_empty(),
        "the partial revision gives its space back: {left:?}"
    );

    // Still full: still not refused, and asked again (no remembered refusal, no 304).
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Unreachable { .. }
    ));
    std::fs::remove_file(&filler).unwrap();
    match remote.poll(SystemTime::now()).await {
        Poll::Updated { revision: 1, .. } => {}
        other => panic!("the revision is taken once there is room: {other:?}"),
    }
    assert_eq!(remote.status().last_error, None);
    drop(remote);
}

#[tokio::test]
async fn two_followers_sharing_a_state_directory_each_take_a_new_revision_intact() {
    // The old daemon and its successor, during a handoff, follow from one state directory.
    let (world, first) = in_force_at_one().await;
    drop(first);
    let published = world.publish(&repo().join("manifests")).await;
    assert_eq!(published.revision, 2);
    let mut a = world.remote();
    let mut b = world.remote();
    let now = SystemTime::now();
    let (pa, pb) = tokio::join!(a.poll(now), b.poll(now));
    for (poll, remote) in [(pa, &a), (pb, &b)] {
        assert!(
            matches!(poll, Poll::Updated { revision: 2, .. }),
            "{poll:?}"
        );
        let f = remote.in_force().expect("a revision in force");
        assert_eq!(f.revision(), 2);
        stackwarden::manifest::load_in(&f.manifests, Some(ENV), Some(&f.tree))
            .expect("the revision in force validates");
    }
    assert_eq!(
        a.in_force().map(|f| f.tree.clone()),
        b.in_force().map(|f| f.tree.clone()),
        "both point at the one tree taken"
    );
}

/// An archive with one raw entry, written byte by byte so that no library refuses the name.
fn raw_archive(name: &[u8], kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    if let Some(link) = link {
        header.set_link_name(link).unwrap();
    }
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(header.as_bytes()).unwrap();
    gz.write_all(data).unwrap();
    let pad = (512 - data.len() % 512) % 512;
    gz.write_all(&vec![0u8; pad + 1024]).unwrap();
    gz.finish().unwrap()
}

async fn hostile_is_refused(archive: Vec<u8>, entry: &str) {
    let (world, mut remote) = in_force_at_one().await;
    world.offer_archive(2, archive).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    match &reason {
        Rejection::HostileArchive { entry: e, .. } => {
            assert!(e.contains(entry), "{reason}")
        }
        other => panic!("{other}"),
    }
    still_at_one(&remote);
    let escaped = world.state.path().join("escape");
    assert!(!escaped.exists(), "something was written outside");
}

#[tokio::test]
async fn an_archive_climbing_out_with_dot_dot_is_refused() {
    let archive = raw_archive(b"../../escape", tar::EntryType::Regular, None, b"x");
    hostile_is_refused(archive, "../../escape").await;
}

#[tokio::test]
async fn an_archive_with_an_absolute_path_is_refused() {
    let archive = raw_archive(b"/tmp/escape", tar::EntryType::Regular, None, b"x");
    hostile_is_refused(archive, "/tmp/escape").await;
}

#[tokio::test]
async fn an_archive_with_a_symlink_is_refused() {
    let archive = raw_archive(
        b"manifests/stack.yaml",
        tar::EntryType::Symlink,
        Some("/etc/passwd"),
        b"",
    );
    hostile_is_refused(archive, "manifests/stack.yaml").await;
}

/// Issue 35: a name with a newline would forge lines wherever it is shown.
#[tokio::test]
async fn an_archive_with_a_newline_in_a_file_name_is_refused() {
    let archive = raw_archive(b"manifests/a\nb.yaml", tar::EntryType::Regular, None, b"x");
    let (world, mut remote) = in_force_at_one().await;
    world.offer_archive(2, archive).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    match &reason {
        Rejection::HostileArchive { entry, why } => {
            assert_eq!(entry, r"manifests/a\nb.yaml", "{reason}");
            assert!(why.contains("control character"), "{reason}");
        }
        other => panic!("{other}"),
    }
    still_at_one(&remote);
    assert!(
        !remote
            .status()
            .last_error
            .clone()
            .unwrap_or_default()
            .contains('\n')
    );
}

#[tokio::test]
async fn an_archive_of_a_hundred_thousand_entries_is_refused() {
    let entries: Vec<(String, Vec<u8>)> = (0..100_000)
        .map(|i| (format!("f/{i}"), Vec::new()))
        .collect();
    let archive = bundle::archive(&entries).unwrap();
    let (world, mut remote) = in_force_at_one().await;
    world.offer_archive(2, archive).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    match &reason {
        Rejection::HostileArchive { why, .. } => {
            assert!(why.contains("more than 10000 entries"), "{reason}")
        }
        other => panic!("{other}"),
    }
    still_at_one(&remote);
}

#[tokio::test]
async fn a_bundle_claiming_two_gibibytes_is_refused_from_its_size_before_any_download() {
    let (world, mut remote) = in_force_at_one().await;
    // No such object exists: a download attempt would show as unreachable, not as too large.
    let claim = absent_bundle(2 << 30);
    world.offer(&world.pointer(2, claim), &world.key).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    assert_eq!(
        reason,
        Rejection::TooLarge {
            size: 2 << 30,
            limit: 64 << 20
        }
    );
    still_at_one(&remote);
}

#[tokio::test]
async fn a_bundle_whose_manifests_do_not_validate_is_refused() {
    let (world, mut remote) = in_force_at_one().await;
    let index = serde_json::json!({ "format": 1, "env": ENV, "manifests": "manifests" });
    let archive = bundle::archive(&[
        (
            bundle::INDEX_ENTRY.to_string(),
            serde_json::to_vec(&index).unwrap(),
        ),
        (
            "manifests/stack.yaml".to_string(),
            b"apiVersion: stackwarden.io/v1\nkind: Stack\nmetadata: {name: x}\nspec: {nope: 1}\n"
                .to_vec(),
        ),
    ])
    .unwrap();
    world.offer_archive(2, archive).await;
    let reason = refused(remote.poll(SystemTime::now()).await);
    match &reason {
        Rejection::Invalid { errors } => {
            assert!(
                errors.iter().any(|e| e.contains("stack.yaml")),
                "{errors:?}"
            )
        }
        other => panic!("{other}"),
    }
    still_at_one(&remote);
}

#[tokio::test]
async fn two_concurrent_publishes_yield_two_revisions_or_one_clear_refusal_never_a_lost_one() {
    let world = World::new().await;
    let a = bundle::build(&world.edited_tree("a", "300M"), Some(ENV), None).unwrap();
    let b = bundle::build(&world.edited_tree("b", "310M"), Some(ENV), None).unwrap();
    let request = |bundle| Request {
        location: &world.location,
        bundle,
        key: &world.key,
        publisher: Publisher::default(),
        expires_in: Duration::from_secs(3600),
        now: SystemTime::now(),
        recover: false,
    };
    let mut lost = 0;
    for round in 0..5 {
        let (ra, rb) = tokio::join!(
            publish::publish(&world.s3, request(&a)),
            publish::publish(&world.s3, request(&b))
        );
        let mut won: Vec<(u64, String)> = Vec::new();
        let mut losers: Vec<u64> = Vec::new();
        for r in [ra, rb] {
            match r {
                Ok(p) => won.push((p.revision, p.pointer.bundle.sha256)),
                Err(PublishError::Lost { winner, .. }) => losers.push(winner),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(!won.is_empty(), "round {round}: nobody won");
        if won.len() == 2 {
            assert_ne!(won[0].0, won[1].0, "round {round}: one revision twice");
        }
        for l in &losers {
            assert!(
                won.iter().any(|(r, _)| r == l),
                "round {round}: the refusal names revision {l}, which no publish wrote"
            );
        }
        lost += losers.len();
        // The pointer is the last winner's: nothing that succeeded was overwritten unseen.
        let latest = won.iter().max_by_key(|(r, _)| *r).unwrap();
        let now = stackwarden::source::pointer::open(
            &world.get(&world.location.pointer_key()).await,
            &world.key.trusted(),
            ENV,
        )
        .unwrap()
        .pointer;
        assert_eq!((now.revision, now.bundle.sha256.clone()), latest.clone());
    }
    eprintln!("{lost} of 10 publishes lost a race and said so");
}

/// Runs the real binary against this moto with the given keys, publishing as nobody.
fn stackwarden(moto: &Moto, keys: (&str, &str), args: &[&str]) -> Output {
    Cli::new(args)
        .moto(moto)
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env_remove("GITHUB_SHA")
        .env_remove("GITHUB_RUN_ID")
        .output()
}

const TESTING: (&str, &str) = ("testing", "testing");

async fn write_status(world: &World, revision: Option<u64>, result: &str, written: SystemTime) {
    let source = revision.map(|r| serde_json::json!({ "revision": r }));
    let body = snapshot::compose(
        serde_json::json!({
            "phase": if result == "converged" { "Ready" } else { "Degraded" },
            "lastPass": { "result": result, "driftsFound": 0, "repairs": 0, "writes": 0 },
            "errors": if result == "failed" { vec!["Container/loki: create failed"] } else { vec![] },
        }),
        source.as_ref(),
        written,
    );
    snapshot::write_snapshot(&world.s3, &world.location, body.to_string().as_bytes())
        .await
        .unwrap();
}

#[tokio::test]
async fn status_wait_revision_exit_codes_follow_the_contract() {
    let world = World::new().await;
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--env",
            ENV,
            "--bucket",
            BUCKET,
            "--timeout",
            "1s",
        ];
        args.extend_from_slice(extra);
        stackwarden(&world.moto, TESTING, &args)
    };
    let out = status(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no snapshot yet: {}",
        text(&out)
    );

    write_status(&world, Some(3), "converged", SystemTime::now()).await;
    let out = status(&["--wait-revision", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("converged at revision 3"),
        "{}",
        text(&out)
    );
    let out = status(&["--wait-revision", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = status(&["--wait-revision", "3", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exitCode"], 0);
    assert_eq!(json["summary"]["revision"], 3);

    write_status(&world, Some(4), "drifted", SystemTime::now()).await;
    assert_eq!(status(&["--wait-revision", "4"]).status.code(), Some(2));

    write_status(&world, Some(4), "failed", SystemTime::now()).await;
    let out = status(&["--wait-revision", "4", "--output", "markdown"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Container/loki: create failed"),
        "{}",
        text(&out)
    );

    let long_ago = SystemTime::now() - Duration::from_secs(11 * 60);
    write_status(&world, Some(5), "converged", long_ago).await;
    let out = status(&["--wait-revision", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stale"), "{}", text(&out));
}

#[tokio::test]
async fn publish_refuses_manifests_that_do_not_validate_and_writes_nothing() {
    let world = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path().join("keys");
    let dir = dir.to_str().unwrap();
    let out = stackwarden(&world.moto, TESTING, &["keygen", "--out", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again = stackwarden(&world.moto, TESTING, &["keygen", "--out", dir]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing key is never replaced"
    );
    let key = format!("{dir}/{}", signing::SECRET_KEY_FILE);

    let copy = copy_of_repo(world.scratch.path());
    std::fs::write(
        copy.join("host/broken.yaml"),
        "apiVersion: stackwarden.io/v1\nkind: Container\nmetadata: {name: loki}\nspec: {}\n",
    )
    .unwrap();
    let manifests = copy.to_str().unwrap();
    let out = stackwarden(
        &world.moto,
        TESTING,
        &[
            "publish", "-f", manifests, "--env", ENV, "--bucket", BUCKET, "--key", &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("broken.yaml"), "{}", text(&out));
    let listed = world
        .s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing was uploaded");
}

/// Switches moto's IAM enforcement on for every later request.
fn enforce(endpoint: &str) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req = format!(
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "reset-auth: {answer}");
}

/// An IAM user holding `principal`'s generated policy; its access key.
async fn user(
    world: &World,
    name: &str,
    principal: stackwarden::provider::aws::permissions::Principal,
) -> (String, String) {
    use stackwarden::provider::aws::permissions::{Scope, policy};
    let mut desired = stackwarden::manifest::load(&repo().join("manifests"), Some(ENV))
        .unwrap()
        .desired;
    stackwarden::manifest::fill_runtime(&mut desired, "123456789012");
    let doc = policy(
        principal,
        &Scope::of(&desired, "123456789012").expect("the shipped layouts"),
    );
    let iam = aws_sdk_iam::Client::new(&world.moto.sdk_config().await);
    iam.create_user().user_name(name).send().await.unwrap();
    iam.put_user_policy()
        .user_name(name)
        .policy_name("stackwarden")
        .policy_document(doc.to_string())
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    (
        key.access_key_id().to_string(),
        key.secret_access_key().to_string(),
    )
}

#[tokio::test]
async fn status_works_with_the_readonly_policy_and_publish_with_it_fails_clearly() {
    use stackwarden::provider::aws::permissions::Principal;
    let world = World::new().await;
    write_status(&world, Some(1), "converged", SystemTime::now()).await;
    let readonly = user(&world, "readonly", Principal::Readonly).await;
    let ci = user(&world, "ci", Principal::Ci).await;
    enforce(&world.moto.endpoint);
    let as_ = |keys: (&String, &String), args: &[&str]| {
        stackwarden(&world.moto, (keys.0.as_str(), keys.1.as_str()), args)
    };
    let key = world.keys.path().join(signing::SECRET_KEY_FILE);
    let key = key.to_str().unwrap();
    let target = ["--env", ENV, "--bucket", BUCKET];

    let out = as_(
        (&readonly.0, &readonly.1),
        &[&["status"][..], &target].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = as_(
        (&readonly.0, &readonly.1),
        &[&["publish", "--key", key][..], &target].concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    assert!(text(&out).contains("iam-policy --for ci"), "{}", text(&out));

    // The snapshot says revision 1 is in force, and no pointer is there: publish stops
    // rather than start again at 1, and the CI policy suffices to recover.
    let out = as_(
        (&ci.0, &ci.1),
        &[&["publish", "--key", key][..], &target].concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("publish --recover"), "{}", text(&out));
    let out = as_(
        (&ci.0, &ci.1),
        &[&["publish", "--recover", "--key", key][..], &target].concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the ci policy publishes: {}",
        text(&out)
    );
    let last = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        last.lines().last(),
        Some("2"),
        "the revision is stdout's last line"
    );
}

/// `publish` takes its number only from a pointer its key verifies: a forged one at a high
/// revision stops it with what to do; `--recover` publishes on the revision the hosts report,
/// and the host takes it.
#[tokio::test]
async fn publish_builds_only_on_a_pointer_it_verifies_and_recovers_on_the_hosts_revision() {
    let (world, mut remote) = in_force_at_one().await;
    write_status(&world, Some(1), "converged", SystemTime::now()).await;
    let other_dir = tempfile::tempdir().unwrap();
    let (secret, _) = signing::generate(other_dir.path()).unwrap();
    let other = SigningKey::from_file(&secret).unwrap();
    let bundle = remote.in_force().unwrap().pointer.bundle.clone();
    world
        .offer(&world.pointer(u64::MAX - 1, bundle), &other)
        .await;
    let edited = world.edited_tree("edit", "400M");
    match world.try_publish(&edited, false).await {
        Err(e @ PublishError::Untrusted { .. }) => {
            assert!(e.to_string().contains("--recover"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let published = world.try_publish(&edited, true).await.expect("recovery");
    assert_eq!(published.revision, 2);
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 2, .. }
    ));
}

/// A deleted pointer, or an older one put back, would make the next publish a number every
/// host refuses: publish stops instead, and `--recover` goes on from the hosts' revision.
#[tokio::test]
async fn a_deleted_or_replayed_pointer_stops_publish_and_recovery_goes_on_from_the_hosts() {
    let (world, mut remote) = in_force_at_one().await;
    let first = world.get(&world.location.pointer_key()).await;
    world.publish(&world.edited_tree("two", "400M")).await;
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 2, .. }
    ));
    write_status(&world, Some(2), "converged", SystemTime::now()).await;

    // Replayed: revision 1's own pointer, signed by the real key.
    world.put(&world.location.pointer_key(), first).await;
    let three = world.edited_tree("three", "300M");
    match world.try_publish(&three, false).await {
        Err(PublishError::Behind {
            revision: 1,
            known: 2,
            ..
        }) => {}
        other => panic!("expected Behind, got {other:?}"),
    }

    // Deleted.
    world
        .s3
        .delete_object()
        .bucket(BUCKET)
        .key(world.location.pointer_key())
        .send()
        .await
        .unwrap();
    match world.try_publish(&three, false).await {
        Err(PublishError::Missing { known: 2, .. }) => {}
        other => panic!("expected Missing, got {other:?}"),
    }
    let published = world.try_publish(&three, true).await.expect("recovery");
    assert_eq!(published.revision, 3);
    assert!(matches!(
        remote.poll(SystemTime::now()).await,
        Poll::Updated { revision: 3, .. }
    ));
}

/// `git` in `dir`, as a person would run it; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 35: a publish from a work tree with uncommitted changes to what the bundle holds
/// was labelled with HEAD's commit, which does not hold those bytes.
#[tokio::test]
async fn publish_from_a_dirty_tree_labels_the_revision_dirty_and_a_clean_one_with_its_commit() {
    let world = World::new().await;
    let keys = world.scratch.path().join("keys");
    let keys = keys.to_str().unwrap();
    let out = stackwarden(&world.moto, TESTING, &["keygen", "--out", keys]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let key = format!("{keys}/{}", signing::SECRET_KEY_FILE);
    let checkout = world.scratch.path().join("checkout");
    let manifests = copy_of_repo(&checkout);
    git(&checkout, &["init", "-q"]);
    git(&checkout, &["add", "."]);
    git(&checkout, &["commit", "-q", "-m", "the reviewed state"]);
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    let labelled = async || {
        let out = stackwarden(
            &world.moto,
            TESTING,
            &[
                "publish",
                "-f",
                manifests.to_str().unwrap(),
                "--env",
                ENV,
                "--bucket",
                BUCKET,
                "--key",
                &key,
                "--commit",
                &head,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let object = world.get(&world.location.pointer_key()).await;
        let pointer = stackwarden::source::pointer::peek(&object).unwrap();
        (pointer.publisher.commit, text(&out))
    };

    // As committed: the commit itself.
    let (commit, _) = labelled().await;
    assert_eq!(commit.as_deref(), Some(head.as_str()));

    // A file outside the bundle edited: still the commit.
    std::fs::write(checkout.join("NOTES"), "not bundled\n").unwrap();
    let (commit, _) = labelled().await;
    assert_eq!(commit.as_deref(), Some(head.as_str()));

    // A bundled source edited and not committed: the label says so, and publish names it.
    let loki = checkout.join("config/loki.yaml");
    let edited = std::fs::read_to_string(&loki).unwrap() + "# not committed\n";
    std::fs::write(&loki, edited).unwrap();
    let (commit, said) = labelled().await;
    assert_eq!(commit, Some(format!("{head}-dirty")), "{said}");
    assert!(said.contains("config/loki.yaml"), "{said}");
}
