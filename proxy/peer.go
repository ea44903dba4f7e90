package proxy

import (
	"net"
	"syscall"
)

// netConner is a connection wrapping another (*tls.Conn, for one): peerClosed
// looks through it to the socket.
type netConner interface {
	NetConn() net.Conn
}

// peerClosed reports whether the client closed its connection, without consuming
// any of what it sent (a look at the socket that does not block). It sees through
// wrappers that implement NetConn, such as TLS; a connection without a socket is
// never reported closed.
func peerClosed(c net.Conn) bool {
	c = socketOf(c)
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rc.Read(func(fd uintptr) bool {
		closed = socketClosed(int(fd))
		return true
	})
	return closed
}

// socketOf returns the connection under c's wrappers (TLS, limits).
func socketOf(c net.Conn) net.Conn {
	for {
		w, ok := c.(netConner)
		if !ok {
			return c
		}
		inner := w.NetConn()
		if inner == nil || inner == c {
			return c
		}
		c = inner
	}
}
