package replicate

import (
	"bufio"
	"io"
	"testing"
)

// BenchmarkWriteGroupEffect writes the effect of one SET of a native group, as
// the master link's writer does for each write of a group.
func BenchmarkWriteGroupEffect(b *testing.B) {
	bw := bufio.NewWriterSize(io.Discard, 16<<10)
	args := []byte("$3\r\nSET\r\n$8\r\nkey:1234\r\n$3\r\nxyz\r\n")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		WriteGroupEffect(bw, 0, 3, args)
	}
}

// BenchmarkWriteCallCommand writes one command of a script call.
func BenchmarkWriteCallCommand(b *testing.B) {
	bw := bufio.NewWriterSize(io.Discard, 16<<10)
	args := []byte("$3\r\nSET\r\n$8\r\nkey:1234\r\n$3\r\nxyz\r\n")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		WriteCallCommand(bw, 0, 3, 0, args)
	}
}
