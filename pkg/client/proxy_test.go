package client_test

import (
	"net"
	"sync"
	"testing"
)

// startProxy forwards each connection to its loopback address on to
// target, and returns the address. For every pair it runs toNode(up,
// down), copying from the client (down) to the node (up), and
// toClient(down, up) the other way, each on a goroutine of its own that
// closes its destination when the function returns. The test's cleanup
// closes the listener and every connection and waits for the goroutines.
func startProxy(t *testing.T, target string, toNode func(up, down net.Conn), toClient func(down, up net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer up.Close()
				toNode(up, down)
			}()
			go func() {
				defer wg.Done()
				defer down.Close()
				toClient(down, up)
			}()
		}
	}()
	return ln.Addr().String()
}
