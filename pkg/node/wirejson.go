package node

import (
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/pkg/ws"
)

// browserMarshaler is the REST gateway's marshaler: the gateway's default
// (protojson, unpopulated fields emitted, unknown fields discarded on
// input, google.api.HttpBody passed through), except that its answers write
// ts, seq and the other 64-bit integers as JSON numbers while they are
// exact in JavaScript, as the WebSocket stream does (ws.BrowserJSON). A
// history read and the stream give a browser the same types. Requests may
// still carry them as strings or numbers.
func browserMarshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: &browserJSONPb{JSONPb: runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}}
}

type browserJSONPb struct{ runtime.JSONPb }

// Marshal is JSONPb's, with browser numbers.
func (j *browserJSONPb) Marshal(v any) ([]byte, error) {
	b, err := j.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	return ws.BrowserJSON(b), nil
}

// NewEncoder encodes through Marshal (the gateway uses it for streamed
// answers; the chat API has none over REST, but the types stay the same).
func (j *browserJSONPb) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		b, err := j.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		_, err = w.Write(j.Delimiter())
		return err
	})
}
