package proxy

import "golang.org/x/sys/unix"

// socketClosed reports whether the peer shut down its side of the socket fd.
// POLLRDHUP tells even when unread data comes before the end, as with a TLS
// client, whose close_notify alert precedes its FIN.
func socketClosed(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	if err != nil || n == 0 {
		return false
	}
	return fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
}
