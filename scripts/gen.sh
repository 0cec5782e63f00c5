#!/usr/bin/env bash
# Regenerates the committed code in api/ from api/chat.proto, offline.
# Needs protoc (Debian: protobuf-compiler); installs pinned plugins with
# `go install` into .bin/ (git-ignored). Usage: scripts/gen.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GATEWAY=v2.33.0

bin="$PWD/.bin"
mkdir -p "$bin"
for tool in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC" \
  "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$GATEWAY" \
  "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$GATEWAY"; do
  GOBIN="$bin" go install "$tool"
done
export PATH="$bin:$PATH"

command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }

protoc -I api \
  --go_out=api --go_opt=paths=source_relative \
  --go-grpc_out=api --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out=api --grpc-gateway_opt=paths=source_relative \
  --grpc-gateway_opt=grpc_api_configuration=api/chat_http.yaml \
  --openapiv2_out=api \
  --openapiv2_opt=grpc_api_configuration=api/chat_http.yaml \
  api/chat.proto

# The seed contract's proto, compiled exactly as written, for the
# compatibility test (a separate binary so that the two chat.Message
# registrations never meet).
protoc -I test/seed/proto \
  --go_out=test/seed --go_opt=Mmessages.proto=example.com/chat/test/seed/seedpb \
  --go_opt=module=example.com/chat/test/seed \
  --go-grpc_out=test/seed --go-grpc_opt=Mmessages.proto=example.com/chat/test/seed/seedpb \
  --go-grpc_opt=module=example.com/chat/test/seed \
  test/seed/proto/messages.proto
