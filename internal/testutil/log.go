package testutil

import (
	"bytes"
	"log/slog"
	"testing"
)

// Logger returns a debug-level logger writing to tb.Log, so that a failing
// test shows what the code under test logged. Nothing may log through it
// after the test and its cleanups are done.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	return len(p), nil
}
