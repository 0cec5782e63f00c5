package node

import (
	"reflect"
	"testing"
)

func TestParseClusterURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want clusterURL
		err  bool
	}{
		{in: "redis-cluster://127.0.0.1:7000,127.0.0.1:7001", want: clusterURL{Addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001"}}},
		{in: "redis-cluster://a:1/", want: clusterURL{Addrs: []string{"a:1"}}},
		{in: "redis-cluster://u:p%40ss@a:1,b:2/?prefix=staging:chat:", want: clusterURL{Addrs: []string{"a:1", "b:2"}, Username: "u", Password: "p@ss", Prefix: "staging:chat:"}},
		{in: "redis-cluster://:secret@[::1]:7000?prefix=x:", want: clusterURL{Addrs: []string{"[::1]:7000"}, Password: "secret", Prefix: "x:"}},
		{in: "redis-cluster://", err: true},
		{in: "redis-cluster://a", err: true},
		{in: "redis-cluster://a:0", err: true},
		{in: "redis-cluster://a:1/0", err: true},
		{in: "redis-cluster://a:1?db=2", err: true},
		{in: "redis://a:1", err: true},
	} {
		got, err := parseClusterURL(tc.in)
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseClusterURL(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}
