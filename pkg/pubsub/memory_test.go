package pubsub_test

import (
	"testing"

	"go.uber.org/goleak"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMemoryContract(t *testing.T) {
	t.Parallel()
	pubsubtest.Run(t, func(t *testing.T) (pubsub.Broker, history.Store, pubsubtest.Resetter) {
		log := history.NewMemory(history.MemoryConfig{Size: pubsubtest.HistorySize})
		b := pubsub.NewMemory(log)
		t.Cleanup(func() { _ = b.Close() })
		return b, log, func(t *testing.T, room string) { log.Reset(room) }
	})
}
