//go:build !linux

package proxy

import "syscall"

// socketClosed reports whether the peer closed the socket fd: a peek that
// returns nothing at the end of the stream. Unread data before the end (a TLS
// client's close_notify alert) hides it until the data is read.
func socketClosed(fd int) bool {
	var buf [1]byte
	n, _, err := syscall.Recvfrom(fd, buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN && err != syscall.EWOULDBLOCK)
}
