# syntax=docker/dockerfile:1
#
# The kopf operator image: the `kopf` binary plus ONE handler plugin, nothing else.
#
#   docker build -t kopf-operator:latest .                                  # examples/01-minimal
#   docker build -t my-operator --build-arg PLUGIN=my-plugin-package .      # a workspace plugin
#
# The build stage runs the same command as CI: `cargo build --release --locked -p kopf-cli -p PLUGIN`.
# The runtime stage is glibc-based (plugins are loaded with dlopen, so no static musl binary)
# and runs as a non-root user. The plugin is installed as /opt/kopf/libhandlers.so.
# Operator authors outside this repository: see docs/deployment.md for a two-file image
# `FROM` this one.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# The plugin's package name (a cdylib crate of the workspace).
ARG PLUGIN=example-01-minimal
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the toolchain; rustup installs it on first use.
RUN cargo build --release --locked -p kopf-cli -p "${PLUGIN}" \
 && mkdir -p /out \
 && cp target/release/kopf /out/kopf \
 && cp "target/release/lib$(echo "${PLUGIN}" | tr '-' '_').so" /out/libhandlers.so

FROM ${RUNTIME_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kopf
COPY --from=build /out/kopf /usr/local/bin/kopf
COPY --from=build /out/libhandlers.so /opt/kopf/libhandlers.so
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/kopf"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "/opt/kopf/libhandlers.so"]
