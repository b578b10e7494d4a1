# syntax=docker/dockerfile:1
#
# kopf's images, from this workspace. Stages:
#
#   kopf     only the stripped `kopf` binary (/usr/local/bin/kopf), FROM scratch: the stage
#            operator images copy the binary from (the `kopf new` scaffold's Dockerfile,
#            docs/deployment.md):
#              docker build --target kopf -t kopf:0.1.0 .
#   runtime  (the default) `kopf` plus the workspace plugins named by PLUGINS, on a slim
#            glibc base (plugins are loaded with dlopen: no static musl), non-root, no shell:
#              docker build -t kopf-operator:0.1.0 .
#              docker build -t my-operators:0.1.0 --build-arg PLUGINS="example-01-minimal example-13-hooks" .
#
# The build stage runs CI's build command for those packages (`cargo build --release --locked
# -p kopf-cli -p PLUGIN...`), with the registry and the target directory as cache mounts.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# Space-separated cdylib packages of the workspace. Each lands in /opt/kopf/plugins/; the
# first is also /opt/kopf/libhandlers.so, the plugin of the default command (with several,
# list them in the container's args: `kopf run ... /opt/kopf/plugins/libA.so /opt/kopf/plugins/libB.so`).
ARG PLUGINS=example-01-minimal
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    set -eu; \
    packages="-p kopf-cli"; \
    for p in ${PLUGINS}; do packages="$packages -p $p"; done; \
    cargo build --release --locked --target-dir /cache/target $packages; \
    mkdir -p /out/bin /out/opt/kopf/plugins; \
    strip -o /out/bin/kopf /cache/target/release/kopf; \
    first=""; \
    for p in ${PLUGINS}; do \
      lib="lib$(echo "$p" | tr '-' '_').so"; \
      strip --strip-unneeded -o "/out/opt/kopf/plugins/$lib" "/cache/target/release/$lib"; \
      if [ -z "$first" ]; then first="$lib"; cp "/out/opt/kopf/plugins/$lib" /out/opt/kopf/libhandlers.so; fi; \
    done

FROM scratch AS kopf
COPY --from=build /out/bin/kopf /usr/local/bin/kopf

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=kopf /usr/local/bin/kopf /usr/local/bin/kopf
COPY --from=build /out/opt/kopf /opt/kopf
# distroless' `nonroot` user.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kopf"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "/opt/kopf/libhandlers.so"]
