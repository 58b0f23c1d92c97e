# syntax=docker/dockerfile:1
#
# One Dockerfile for both services; the build-arg APP picks which one:
#   docker build --build-arg APP=payment-provider -t invoice-platform/payment-provider:dev .
#   docker build --build-arg APP=invoice-app      -t invoice-platform/invoice-app:dev .
#
# Stages: chef (rust toolchain + cargo-chef) -> planner (recipe.json from the manifests)
#   -> builder (dependencies cooked in their own layer, then the release binary)
#   -> runtime (distroless cc, non-root, no shell) -> app-<APP> (entrypoint).
#
# libpq: diesel's pq-sys links libpq dynamically by default. The builder copies
# every shared library the binary needs that distroless/cc lacks (libpq and its
# Kerberos/LDAP/TLS chain) next to the distroless libraries. If the crates switch
# to `pq-sys = { features = ["bundled"] }`, libpq is linked statically, ldd lists
# nothing extra and this Dockerfile needs no change. SQLite is bundled
# (libsqlite3-sys "bundled"), so it never shows up here.

# Required: payment-provider or invoice-app. Without it the last stage,
# `FROM app-${APP}`, has no name to resolve and the build stops at once.
ARG APP

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-base

# Literal tags (no ARG) so that Dependabot can propose updates. The Rust version
# follows rust-version in Cargo.toml and RUST_TOOLCHAIN in .github/workflows; the
# Debian release (bookworm) must match the runtime's (distroless *-debian12), so
# the binary asks for no newer glibc than the runtime has.
FROM rust:1.95-bookworm AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libpq-dev for pq-sys (pkg-config finds it); harmless when libpq is bundled.
# Versions are not pinned: the Debian archive drops old ones, which would break
# the build; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY --from=planner /src/recipe.json recipe.json
# Dependencies of both services in one layer: it does not depend on APP, so the
# second image build reuses it, and it is rebuilt only when a manifest or
# Cargo.lock changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    -p payment-provider -p invoice-app
COPY . .
ARG APP
RUN cargo build --release --locked -p "${APP}"

# Stage the binary and the shared libraries distroless lacks under /staging,
# laid out as in the final image. The distroless tree is copied in only to see
# which libraries it already has.
COPY --from=runtime-base / /distroless/
RUN set -eu; \
    bin="target/release/${APP}"; \
    libdir="/staging/usr/lib/$(gcc -print-multiarch)"; \
    install -D -m 0755 "${bin}" "/staging/usr/local/bin/${APP}"; \
    if ldd "${bin}" | grep -q 'not found'; then ldd "${bin}" >&2; exit 1; fi; \
    mkdir -p "${libdir}"; \
    ldd "${bin}" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' \
    | while read -r soname path; do \
        if [ -n "$(find /distroless -name "${soname}" -print -quit)" ]; then continue; fi; \
        echo "bundling ${soname} (${path})"; \
        cp -L "${path}" "${libdir}/${soname}"; \
      done

FROM runtime-base AS runtime
ARG APP
ARG VERSION=0.1.0
ARG REVISION=unknown
# Repository URL; CI passes it (e.g. ${{ github.server_url }}/${{ github.repository }}).
ARG SOURCE=""
LABEL org.opencontainers.image.title="${APP}" \
      org.opencontainers.image.description="invoice platform: ${APP}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /staging/ /
# Numeric user, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
WORKDIR /home/nonroot
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz.

# ENTRYPOINT cannot expand build args, so each service gets a tiny stage with a
# literal path, and the last stage picks one by APP. The RUN starts the binary
# once: it fails the build if a shared library is missing from the image.
FROM runtime AS app-payment-provider
RUN ["/usr/local/bin/payment-provider", "--help"]
ENTRYPOINT ["/usr/local/bin/payment-provider"]
CMD ["serve"]

FROM runtime AS app-invoice-app
RUN ["/usr/local/bin/invoice-app", "--help"]
ENTRYPOINT ["/usr/local/bin/invoice-app"]
CMD ["serve"]

# hadolint ignore=DL3006
FROM app-${APP}
