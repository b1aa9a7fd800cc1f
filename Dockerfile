# syntax=docker/dockerfile:1
#
# One image for every subcommand (worker, gateway, setup, dlq, livechat-sim):
# the binary is the entrypoint and the subcommand is the first argument, e.g.
#   docker run --rm handoff worker --help
#
# Build:  docker build --build-arg VERSION=$(git describe --always --dirty) -t handoff .

# The build stage runs on the builder's own platform and cross-compiles
# (GOOS/GOARCH from buildx's TARGET* args), so a multi-arch build does not
# run the Go toolchain under emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# CGO off: the runtime image has no libc. -trimpath keeps builder paths out
# of the binary (reproducible, no leak of the build machine's layout);
# -s -w drops symbol tables and DWARF, which a production binary does not need.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/handoff ./cmd/handoff

# distroless/static: CA certificates (LiveChat is HTTPS), tzdata and
# /etc/passwd, nothing else: no shell, no package manager. The nonroot tag
# runs as UID/GID 65532, which the Kubernetes manifests also pin.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/handoff /handoff
USER 65532:65532
# 8080 gateway, 9090 worker metrics/health, 8091 LiveChat simulator.
EXPOSE 8080 9090 8091
ENTRYPOINT ["/handoff"]
CMD ["--help"]
