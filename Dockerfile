# Multi-stage build: a static node binary in a minimal, non-root image.
# No `# syntax=` line: the Dockerfile frontend built into the engine's
# BuildKit serves everything here, so no build needs a registry for it.
#
# Build arguments, all optional:
#   GOPROXY, GONOSUMDB, GOFLAGS   passed to the go command (e.g. a module
#                                 proxy of your own: --build-arg GOPROXY=...)
# Build secret, optional (BuildKit; compose passes it, see deploy/README.md):
#   build_ca   PEM certificates trusted in addition to the image's own while
#              modules are downloaded: for a TLS-intercepting proxy, e.g.
#              --secret id=build_ca,src=/etc/ssl/certs/ca-certificates.crt
FROM golang:1.26-bookworm AS build
ARG GOPROXY
ARG GONOSUMDB
ARG GOFLAGS
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/build_ca > /tmp/ca.pem; \
      export SSL_CERT_FILE=/tmp/ca.pem; \
    fi; \
    go mod download
COPY . .
# The modules are in the layer above; only the compiler's cache is kept
# between builds.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/node ./cmd/node \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/chat ./cmd/chat

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/node /out/chat /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8080 50051
# Explicit listen addresses: without them a node in open development mode
# (no JWT key) listens on loopback only, which a container cannot publish.
ENV CHAT_HTTP_ADDR=:8080 CHAT_GRPC_ADDR=:50051
# No shell in the image: the binary checks its own readiness, on the port
# of CHAT_HTTP_ADDR, over https when CHAT_HTTP_TLS_CERT is set.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/node", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/node"]
