# stackwarden in a container: the daemon (`stackwarden run`) or a one-shot validate/plan/apply.
#
#   docker build -t stackwarden .
#
# How to run it (repository mounted read-only, Docker through its socket, AWS through the
# instance profile): README.md, "As a container". scripts/image builds and checks this file
# where no image registry is reachable.
#
# The runtime image holds the binary and a static busybox for the health check, nothing else:
# no shell on PATH, no package manager, no credentials. It runs as uid 10001 and writes
# nothing outside what is mounted (the host root), so `--read-only` needs no tmpfs.
#
# Build arguments (the defaults are the public images):
#   BUILDER   the Rust toolchain the binary is compiled in
#   RUNTIME   what it runs on: distroless cc has glibc, libgcc and the CA certificates the
#             release binary needs (ldd: libc, libm, libgcc_s), and no shell
#   BUSYBOX   a static busybox (the musl variant is built with CONFIG_STATIC): its wget is the
#             health check, since the runtime has no curl and stackwarden no probe command
#   PREBUILT  1: BUILDER already holds the binary at /out/stackwarden, and cargo is skipped
#             (scripts/image: the base images cannot be pulled there, so the binary is
#             built on the machine and brought in as a local builder image)
ARG BUILDER=rust:1-bookworm
ARG RUNTIME=gcr.io/distroless/cc-debian12:nonroot
ARG BUSYBOX=busybox:1.37.0-musl

FROM ${BUSYBOX} AS busybox

FROM ${BUILDER} AS builder
ARG PREBUILT=0
WORKDIR /src
# Only what the build reads (there is no build.rs and nothing is include_str!'d from outside
# src/): no .dockerignore needed, and an edit to docs or manifests reuses this layer.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN if [ "$PREBUILT" = 1 ]; then \
      test -x /out/stackwarden; \
    else \
      cargo build --release --locked \
      && install -D -m 0755 target/release/stackwarden /out/stackwarden; \
    fi

FROM ${RUNTIME}
LABEL org.opencontainers.image.title="stackwarden" \
      org.opencontainers.image.description="Keeps a Grafana observability stack on AWS as declared"
# Not on PATH and without applet links: only the health check calls it, by full path.
COPY --from=busybox /bin/busybox /usr/libexec/stackwarden/busybox
COPY --from=builder /out/stackwarden /usr/local/bin/stackwarden
# Numeric, so that no passwd entry is needed (distroless has none for 10001) and Kubernetes'
# runAsNonRoot can verify it. The files stackwarden writes on the host are owned by 10001,
# as the manifests' ConfigFiles declare; the Docker socket needs its group added at run time
# (--group-add "$(stat -c %g /var/run/docker.sock)").
USER 10001:10001
# The repository (manifests/ and the config/, dashboards/, alerting/ their `source:` paths
# name) is mounted here read-only: -v "$PWD:/stack:ro".
WORKDIR /stack
EXPOSE 9464
# /healthz answers 200 while the process runs (docs/daemon.md). The check runs inside the
# container's network namespace, so it reaches the server on loopback whatever --listen says,
# as long as the port is 9464. Docker's --timeout bounds it; wget's own -T is left out (it
# crashes Debian's static busybox 1.35, which scripts/image uses).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/libexec/stackwarden/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["/usr/local/bin/stackwarden"]
# stackwarden listens on loopback by default (the page shows the stack's shape). Inside a
# container, loopback is the container's own, unreachable from the host: 0.0.0.0 here is the
# container's interface only, and what reaches it is what `docker run -p` publishes. Publish
# it to the host's loopback alone: -p 127.0.0.1:9464:9464. (With --network host there is no
# such boundary: pass --listen 127.0.0.1:9464 instead.)
CMD ["run", "--env", "prod", "--listen", "0.0.0.0:9464"]
