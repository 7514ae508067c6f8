#!/bin/bash
# stackwarden's bootstrap: what a new instance runs at first boot (docs/bootstrap.md).
# stackwarden renders it into the Instance's user data, with its settings as the
# STACKWARDEN_* variables set above this line. It installs Docker (unless present), fetches
# the digest-pinned artifact from the stack's bucket through the instance role, checks its
# SHA-256, and applies the host side once from the newest published revision; that apply
# starts the daemon as Container/stackwarden declares it, which keeps the host from then on.
# Run twice, it changes nothing; run twice at once, the second waits for the first. Every
# step, and every failure (a step's own or any command's that stops the script), is logged to
# the console and to $STACKWARDEN_HOST_ROOT/stackwarden/bootstrap.log.
set -euo pipefail

state=
log_file=
# Set once a failure is logged by `fail`, so the exit trap does not log it again.
failure_logged=
# The command that stopped the script (set -e), for the exit trap to name.
last_error=
# A download in progress, removed if the script stops before it is checked and kept.
partial=

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) stackwarden-bootstrap[$$]: $*"
  printf '%s\n' "$line" >&2
  # A log that cannot be written (a full disk) must not itself stop the step it reports.
  if [[ -n $state && -d $state ]]; then printf '%s\n' "$line" >>"$log_file" || true; fi
}

fail() {
  log "FAILED: $*"
  failure_logged=1
  exit 1
}

on_exit() {
  local status=$?
  if [[ -n $partial ]]; then rm -f "$partial"; fi
  if [[ $status -ne 0 && -z $failure_logged ]]; then
    log "FAILED: exit $status${last_error:+ at $last_error}; the steps after it did not run"
  fi
}
trap 'last_error="line $LINENO: $BASH_COMMAND (exit $?)"' ERR
trap on_exit EXIT
# A run stopped by a signal exits through on_exit too, and so says so in the log.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

: "${STACKWARDEN_ENV:?}" "${STACKWARDEN_REGION:?}" "${STACKWARDEN_BUCKET:?}"
: "${STACKWARDEN_PREFIX:?}" "${STACKWARDEN_HOST_ROOT:?}" "${STACKWARDEN_ARTIFACT:?}"

state=$STACKWARDEN_HOST_ROOT/stackwarden
log_file=$state/bootstrap.log
source_url=s3://$STACKWARDEN_BUCKET/$STACKWARDEN_PREFIX
export AWS_REGION=$STACKWARDEN_REGION

install -d -m 0755 "$state"

# One run at a time (cloud-init and a person, a retry): two would fetch and apply at once.
# The second waits for the first, then finds the daemon running and changes nothing. The
# bound is far above a run's length (an install, a download, one apply).
lock=$state/bootstrap.lock
exec 9>>"$lock"
if ! flock -n 9; then
  log "waiting: another bootstrap run holds $lock"
  flock -w 1800 9 || fail "another bootstrap run has held $lock for 30 minutes; nothing done"
fi
log "start: environment $STACKWARDEN_ENV, source $source_url, artifact $STACKWARDEN_ARTIFACT"

# 1. Docker.
if command -v docker >/dev/null 2>&1; then
  log "docker: present, install skipped"
else
  log "docker: installing"
  dnf install -y docker
  systemctl enable --now docker
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
docker info >/dev/null 2>&1 || fail "docker: the engine does not answer"

if [[ $STACKWARDEN_ARTIFACT == none ]]; then
  log "done: no artifact declared (bootstrap.artifact: none), Docker only"
  exit 0
fi
: "${STACKWARDEN_SHA256:?}" "${STACKWARDEN_TRUST:?}" "${STACKWARDEN_CONTAINER:?}"

# 2. Already bootstrapped: the daemon keeps the host, and runs the lease; nothing to do.
if [[ $(docker inspect --format '{{.State.Running}}' "$STACKWARDEN_CONTAINER" 2>/dev/null) == true ]]; then
  log "done: $STACKWARDEN_CONTAINER is running and keeps the host; nothing changed"
  exit 0
fi

# 3. The artifact, checked against the digest the manifests pin (never the bucket's word).
artifact=$state/artifact-$STACKWARDEN_SHA256
artifact_url=$source_url/artifacts/$STACKWARDEN_SHA256
if [[ -f $artifact ]] && [[ $(sha256sum "$artifact" | cut -d' ' -f1) == "$STACKWARDEN_SHA256" ]]; then
  log "artifact: already here, sha256 checked"
else
  log "artifact: fetching $artifact_url"
  # Under the lock no other run writes here: any partial download is a killed run's.
  rm -f "$state"/artifact-*.part
  # A file of this run's own, moved into place only once its digest is checked (the exit
  # trap removes it otherwise).
  partial=$(mktemp "$state/artifact-XXXXXXXX.part")
  aws s3 cp --only-show-errors "$artifact_url" "$partial" ||
    fail "artifact: $artifact_url cannot be fetched (not published? run \`stackwarden publish --artifact FILE\` and pin its digest); nothing started"
  got=$(sha256sum "$partial" | cut -d' ' -f1)
  if [[ $got != "$STACKWARDEN_SHA256" ]]; then
    fail "artifact: sha256 mismatch: the manifests pin $STACKWARDEN_SHA256, the bucket holds $got; nothing started"
  fi
  mv "$partial" "$artifact"
  partial=
  log "artifact: fetched, sha256 checked"
fi

# 4. The key revisions must be signed with: from the user data, never from the bucket.
trust=$state/trust.pub
if [[ ! -f $trust ]] || [[ $(cat "$trust") != "$STACKWARDEN_TRUST" ]]; then
  printf '%s\n' "$STACKWARDEN_TRUST" >"$trust"
  chmod 0644 "$trust"
  log "trust: $trust written"
fi
install -d -m 0755 "$state/source"

# 5. One apply of the host side from the newest good revision: it starts every container,
# the daemon among them, as the manifests declare them.
apply=(apply --env "$STACKWARDEN_ENV" --scope host --source "$source_url" --trust "$trust"
  --state-dir "$state/source" --host-root "$STACKWARDEN_HOST_ROOT")
case $STACKWARDEN_ARTIFACT in
  binary)
    bin=$state/bin/stackwarden
    install -d -m 0755 "$state/bin"
    if ! cmp -s "$artifact" "$bin"; then
      install -m 0755 "$artifact" "$bin"
      log "binary: installed at $bin"
    fi
    log "apply: the host side from $source_url"
    "$bin" "${apply[@]}" || fail "apply: exit $?; the containers it could not start are named above"
    # The daemon runs as uid 10001 and keeps the source's state from here.
    chown -R 10001:10001 "$state/source"
    ;;
  image)
    log "image: loading"
    loaded=$(docker load --input "$artifact") || fail "image: docker load refused the artifact"
    printf '%s\n' "$loaded" >&2
    # The image to run is the one the digest-pinned artifact holds: the user data names no
    # image, so a new stackwarden image is a published revision, never a new instance.
    image=$(sed -n 's/^Loaded image: //p; s/^Loaded image ID: //p' <<<"$loaded" | head -n 1)
    [[ -n $image ]] || fail "image: the artifact holds no image"
    log "image: loaded $image"
    # The image runs as uid 10001: the host root and the source's state must be its to write.
    chown 10001:10001 "$STACKWARDEN_HOST_ROOT"
    chown -R 10001:10001 "$state/source"
    log "apply: the host side from $source_url, in $image"
    docker run --rm --network host --user 10001:10001 \
      --read-only --cap-drop ALL --security-opt no-new-privileges \
      --group-add "$(stat -c %g /var/run/docker.sock)" \
      -e AWS_REGION -e AWS_ENDPOINT_URL -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
      -v /var/run/docker.sock:/var/run/docker.sock \
      -v "$STACKWARDEN_HOST_ROOT:$STACKWARDEN_HOST_ROOT" \
      "$image" "${apply[@]}" ||
      fail "apply: exit $?; the containers it could not start are named above"
    ;;
  *) fail "unknown artifact kind $STACKWARDEN_ARTIFACT (none, image or binary)" ;;
esac
log "done: the host converged; $STACKWARDEN_CONTAINER keeps it from here"
