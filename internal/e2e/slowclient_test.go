package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// proxyClients is the proxy's count of connected clients (INFO), c excepted.
func proxyClients(t *testing.T, c *redistest.RawConn) int {
	t.Helper()
	return infoInt(t, c, "connected_clients") - 1
}

func waitClients(t *testing.T, c *redistest.RawConn, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for proxyClients(t, c) != want {
		if time.Since(start) > timeout {
			t.Fatalf("proxy has %d clients, want %d after %v", proxyClients(t, c), want, timeout)
		}
		time.Sleep(poll)
	}
	return time.Since(start)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestSlowReaders: a client that pipelines and never reads its replies, and a
// subscriber that never reads its messages, are disconnected once they have
// accepted nothing for the output timeout; meanwhile the proxy's memory stays
// bounded and other clients are served.
func TestSlowReaders(t *testing.T) {
	master := redistest.Start(t)
	slave := redistest.Start(t)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.OutputTimeout = 300 * time.Millisecond
	}, master, slave)
	admin := redistest.DialRaw(t, addr)
	big := strings.Repeat("v", 100<<10)
	mustReply(t, admin, "+OK\r\n", "SET", "big", big)
	base := heapInUse()

	// 1. Pipelined GETs of a 100 KiB value, replies never read.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClients(t, admin, 1, 5*time.Second)
	wrote := make(chan int)
	go func() {
		req := []byte(strings.Repeat("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", 100))
		n := 0
		for {
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				break
			}
			n += 100
		}
		wrote <- n
	}()
	// The proxy stops reading once its replies back up; then it cuts the client.
	took := waitClients(t, admin, 0, 15*time.Second)
	n := <-wrote
	t.Logf("pipelining client disconnected %v after connecting, having sent %d GETs", took, n)
	if peak := heapInUse(); peak > base+64<<20 {
		t.Errorf("heap grew from %d to %d MiB", base>>20, peak>>20)
	}
	mustReply(t, admin, "+PONG\r\n", "PING")

	// 2. A subscriber that reads nothing while 20 MiB are published to it.
	sub, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.Write([]byte("*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n"))
	br := bufio.NewReader(sub)
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 3; i++ { // *3 $9 subscribe $2 ch :1
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	pub := redistest.DialRaw(t, addr)
	msg := strings.Repeat("m", 10<<10)
	published := 0
	deadline := time.Now().Add(15 * time.Second)
	for proxyClients(t, admin) > 1 { // admin excepted: pub and sub
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber that reads nothing was not disconnected after %d messages", published)
		}
		if published < 2000 {
			// :1 while the subscriber is connected; :0 once it was cut.
			if r := string(pub.Do("PUBLISH", "ch", msg)); r != ":1\r\n" && r != ":0\r\n" {
				t.Fatalf("PUBLISH: %q", r)
			}
			published++
		} else {
			time.Sleep(poll)
		}
	}
	t.Logf("subscriber disconnected after %d messages of 10 KiB", published)
	if peak := heapInUse(); peak > base+64<<20 {
		t.Errorf("heap grew from %d to %d MiB", base>>20, peak>>20)
	}
	mustReply(t, pub, ":0\r\n", "PUBLISH", "ch", "after")
}

// TestOutputTimeoutCutsOnTime: a client that asks for a reply larger than the
// socket buffers and reads nothing is cut at the output timeout, not at twice
// it (the kernel taking the reply's first megabytes is not the client reading).
func TestOutputTimeoutCutsOnTime(t *testing.T) {
	const timeout = 500 * time.Millisecond
	master := redistest.Start(t)
	slave := redistest.Start(t)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.OutputTimeout = timeout
		c.BackendTimeout = 30 * time.Second // the 16 MiB value, on a loaded machine
	}, master, slave)
	admin := redistest.DialRaw(t, addr)
	chunk := strings.Repeat("v", 1<<20)
	for i := 1; i <= 16; i++ {
		mustReply(t, admin, fmt.Sprintf(":%d\r\n", i<<20), "APPEND", "big", chunk)
	}
	// The value is on the slave, so the GET's reply comes without delay.
	redistest.WaitConverged(t, 10*time.Second, master, slave)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClients(t, admin, 1, 5*time.Second)
	if _, err := c.Write([]byte("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	first := waitReplyStarts(t, c)
	took := waitClients(t, admin, 0, 10*time.Second)
	t.Logf("client that reads nothing cut %v after its reply began, %v after its request (output timeout %v)",
		took, first.Sub(sent), timeout)
	if took >= 2*timeout {
		t.Fatalf("cut after %v, want about %v", took, timeout)
	}
}

// waitReplyStarts waits until the reply's first bytes reached c, without reading
// them (MSG_PEEK), and returns when they did.
func waitReplyStarts(t *testing.T, c net.Conn) time.Time {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	redistest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		n := 0
		raw.Read(func(fd uintptr) bool {
			n, _, _ = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		if n <= 0 {
			return errors.New("no reply byte yet")
		}
		return nil
	})
	return time.Now()
}
