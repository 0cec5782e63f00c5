package node

import (
	"context"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// fakeStream is a server stream whose SendMsg does nothing.
type fakeStream struct{ grpc.ServerStream }

func (fakeStream) Context() context.Context { return context.Background() }
func (fakeStream) SendMsg(any) error        { return nil }

// TestCallsOnlyCountsCallsNotMessages: with callsOnly the Prometheus
// interceptor still counts the call (started, handled), the handler gets
// grpc-go's own stream, and its messages are not counted; without it,
// each is.
func TestCallsOnlyCountsCallsNotMessages(t *testing.T) {
	t.Parallel()
	info := &grpc.StreamServerInfo{FullMethod: "/chat.Chat/Stream", IsClientStream: true, IsServerStream: true}
	for _, c := range []struct {
		name     string
		wrap     func(grpc.StreamServerInterceptor) grpc.StreamServerInterceptor
		wantSent float64
	}{
		{"callsOnly", callsOnly, 0},
		{"plain", func(i grpc.StreamServerInterceptor) grpc.StreamServerInterceptor { return i }, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			gm := grpcprom.NewServerMetrics()
			reg := prometheus.NewRegistry()
			reg.MustRegister(gm)
			ss := fakeStream{}
			var got grpc.ServerStream
			err := c.wrap(gm.StreamServerInterceptor())(nil, ss, info, func(_ any, s grpc.ServerStream) error {
				got = s
				for range 3 {
					if err := s.SendMsg(nil); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.wantSent == 0 && got != grpc.ServerStream(ss) {
				t.Errorf("handler got %T, want grpc-go's stream", got)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			sums := map[string]float64{} // each counter, over its series
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					sums[mf.GetName()] += m.GetCounter().GetValue()
				}
			}
			for name, want := range map[string]float64{
				"grpc_server_started_total":  1,
				"grpc_server_handled_total":  1,
				"grpc_server_msg_sent_total": c.wantSent,
			} {
				if sums[name] != want {
					t.Errorf("%s = %v, want %v", name, sums[name], want)
				}
			}
		})
	}
}
