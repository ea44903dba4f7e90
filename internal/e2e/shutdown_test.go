package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestGracefulShutdown calls Shutdown while a client's long pipeline is in flight:
// the client receives every reply before its connection is closed, and new
// connections are refused as soon as Shutdown has started.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const n = 20000
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)

	// A plain connection: the writer goroutine must not fail the test after its end.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	var pipeline bytes.Buffer
	val := string(make([]byte, 100))
	for i := 0; i < n; i++ {
		k := "k" + strconv.Itoa(i)
		fmt.Fprintf(&pipeline, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(val), val)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := conn.Write(pipeline.Bytes())
		sent <- err
	}()
	// The proxy is serving the pipeline: its first reply is here.
	if got, err := redistest.ReadFrame(r); string(got) != "+OK\r\n" {
		t.Fatalf("reply 0: %q, %v", got, err)
	}

	shut := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()

	// New connections are refused once Shutdown has started.
	redistest.CheckFor(t, 2*time.Second, poll, func() error {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil
		}
		defer nc.Close()
		// Accepted before the listener closed, or by a listener that should be closed:
		// it must not be served.
		nc.SetDeadline(time.Now().Add(200 * time.Millisecond))
		fmt.Fprint(nc, "*1\r\n$4\r\nPING\r\n")
		if b, err := io.ReadAll(nc); string(b) == "+PONG\r\n" {
			return fmt.Errorf("a connection made after Shutdown started was served (%q, %v)", b, err)
		}
		return errors.New("connection still accepted")
	})
	t.Logf("new connections refused %v after Shutdown started", time.Since(start).Round(time.Millisecond))

	bad := 0
	for i := 1; i < n; i++ {
		got, err := redistest.ReadFrame(r)
		if err != nil {
			t.Fatalf("reply %d of %d: %v (after %d bad replies); the connection closed before every reply was sent", i, n, err, bad)
		}
		if string(got) != "+OK\r\n" {
			if bad++; bad <= 3 {
				t.Errorf("reply %d: %q, want +OK", i, got)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d replies were not +OK", bad, n)
	}
	if err := <-sent; err != nil {
		t.Errorf("writing the pipeline: %v", err)
	}
	// Then the connection closes.
	if got, err := redistest.ReadFrame(r); !errors.Is(err, io.EOF) {
		t.Errorf("after the last reply: %q, %v; want the connection closed (EOF)", got, err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("Shutdown took %v", time.Since(start).Round(time.Millisecond))
	// Every write reached the master.
	if got := master.Do(t, "EXISTS", "k0", "k"+strconv.Itoa(n/2), "k"+strconv.Itoa(n-1)); got != int64(3) {
		t.Errorf("EXISTS of the first, middle and last keys on the master = %v, want 3", got)
	}
	// Shutdown is safe to call again.
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}
