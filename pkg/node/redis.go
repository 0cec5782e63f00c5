package node

import (
	"context"
	"errors"
	"log/slog"
)

func openRedis(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	return nil, errors.New("node: redis backend not wired yet")
}
