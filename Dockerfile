# One image per service, chosen by build argument:
#   docker build --build-arg SERVICE=gateway -t erp-gateway:0.1.0 .
#   docker build --build-arg SERVICE=auth    -t erp-auth:0.1.0 .
#   docker build --build-arg SERVICE=event   -t erp-event:0.1.0 .
#
# Stages: chef (toolchain + cargo-chef) -> planner (recipe.json: the dependency graph only) ->
# builder (compile the dependencies from the recipe — cached as long as Cargo.toml/Cargo.lock do
# not change, and shared by the three services — then the workspace and one binary) -> runtime
# (distroless, non-root, just the binary). The proto crate uses a vendored protoc: no system
# protoc is needed.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.73

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Dependencies of the whole workspace, once for all three services (SERVICE is not used yet, so
# this layer is shared by their builds).
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
# Then our code, and the one binary asked for.
COPY . .
ARG SERVICE
RUN case "${SERVICE}" in \
      gateway|auth|event) ;; \
      *) echo "build argument SERVICE must be gateway, auth or event (got '${SERVICE}')" >&2; exit 1 ;; \
    esac \
 && cargo build --release --locked --bin "erp-${SERVICE}" \
 && install -D -m 0755 "target/release/erp-${SERVICE}" /out/erp-service

# glibc + libgcc + CA certificates, no shell, no package manager; user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="erp-${SERVICE}" \
      org.opencontainers.image.description="Event Reward Platform: the ${SERVICE} service" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/erp-service /usr/local/bin/erp-service
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# gateway: 8080 (HTTP) + 9464 (admin); auth: 50051 (gRPC) + 9465; event: 50052 (gRPC) + 9466.
EXPOSE 8080 9464 50051 9465 50052 9466
ENV ERP_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/erp-service"]
