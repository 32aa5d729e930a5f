# syntax=docker/dockerfile:1
#
# Small static images of the keymesh servers and peer: one build stage
# compiles all three binaries (CGO off, so they need no libc), and a final
# stage per binary copies one of them onto distroless/static, which runs as
# the unprivileged user nonroot (65532).
#
#   docker build --target rendezvous -t keymesh-rendezvous .
#   docker build --target relay      -t keymesh-relay .
#   docker build --target peer       -t keymesh-peer .
#
# Settings come as KEYMESH_<FLAG> environment variables (docker run -e).
# Docker lets unprivileged users bind ports below 1024 inside a container
# (net.ipv4.ip_unprivileged_port_start=0), so the relay can listen on 443
# (KEYMESH_TLS_LISTEN=:443).
#
# The admin endpoint (/healthz, /readyz, /metrics) has no authentication, so
# it listens on the container's loopback only. To scrape it from outside,
# set KEYMESH_ADMIN to the container's address on a private network (for
# example -e KEYMESH_ADMIN=0.0.0.0:9090 with the port published on a
# private interface only: -p 10.0.0.5:9090:9090), never a public one.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/keymesh/keymesh/internal/obs.version=${VERSION}" \
      -o /out/ ./cmd/rendezvous ./cmd/relay ./cmd/peer \
 && mkdir -p -m 0700 /out/state /out/run

FROM gcr.io/distroless/static-debian12:nonroot AS base
# Keys and ACME certificates; mount a volume here to keep them. Only the
# user may enter it (the key files are 0600 anyway).
COPY --from=build --chown=65532:65532 --chmod=0700 /out/state /var/lib/keymesh
ENV HOME=/var/lib/keymesh \
    XDG_DATA_HOME=/var/lib/keymesh \
    KEYMESH_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/keymesh"]

FROM base AS relay
COPY --from=build /out/relay /usr/local/bin/keymesh-relay
ENV KEYMESH_KEY=/var/lib/keymesh/relay.key \
    KEYMESH_ACME_STORAGE=/var/lib/keymesh/certs \
    KEYMESH_ADMIN=127.0.0.1:9090
EXPOSE 3479/udp 443/tcp 3480/udp 3480/tcp
ENTRYPOINT ["/usr/local/bin/keymesh-relay"]

FROM base AS peer
COPY --from=build /out/peer /usr/local/bin/keymesh-peer
# The API socket's directory: the daemon refuses one that group or others
# can enter. Use the CLI inside the container, as the same user:
# docker exec <container> keymesh-peer status
COPY --from=build --chown=65532:65532 --chmod=0700 /out/run /run/keymesh
ENV KEYMESH_KEY=/var/lib/keymesh/peer.key \
    KEYMESH_SOCKET=/run/keymesh/peer.sock
ENTRYPOINT ["/usr/local/bin/keymesh-peer"]
CMD ["up"]

# Last, so a plain `docker build .` builds it.
FROM base AS rendezvous
COPY --from=build /out/rendezvous /usr/local/bin/keymesh-rendezvous
ENV KEYMESH_KEY=/var/lib/keymesh/server.key \
    KEYMESH_ADMIN=127.0.0.1:9090
EXPOSE 3478/udp
ENTRYPOINT ["/usr/local/bin/keymesh-rendezvous"]
