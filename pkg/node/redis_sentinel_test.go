package node

import (
	"reflect"
	"testing"
)

func TestParseSentinelURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want sentinelURL
		err  bool
	}{
		{in: "redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster", want: sentinelURL{Addrs: []string{"127.0.0.1:26379", "127.0.0.1:26380"}, Master: "mymaster"}},
		{in: "redis-sentinel://a:1/m/", want: sentinelURL{Addrs: []string{"a:1"}, Master: "m"}},
		{in: "redis-sentinel://u:p%40ss@a:1,b:2/chat?db=3&prefix=staging:chat:&sentinel_password=s", want: sentinelURL{
			Addrs: []string{"a:1", "b:2"}, Master: "chat", Username: "u", Password: "p@ss", DB: 3, Prefix: "staging:chat:", SentinelPassword: "s"}},
		{in: "redis-sentinel://:secret@[::1]:26379/m%20x", want: sentinelURL{Addrs: []string{"[::1]:26379"}, Master: "m x", Password: "secret"}},
		{in: "redis-sentinel://a:1", err: true},  // no master name
		{in: "redis-sentinel://a:1/", err: true}, // empty master name
		{in: "redis-sentinel:///m", err: true},   // no sentinel
		{in: "redis-sentinel://a/m", err: true},
		{in: "redis-sentinel://a:0/m", err: true},
		{in: "redis-sentinel://a:1/m/x", err: true},
		{in: "redis-sentinel://a:1/m?db=-1", err: true},
		{in: "redis-sentinel://a:1/m?db=x", err: true},
		{in: "redis-sentinel://a:1/m?route=latency", err: true},
		{in: "redis://a:1", err: true},
	} {
		got, err := parseSentinelURL(tc.in)
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSentinelURL(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}
