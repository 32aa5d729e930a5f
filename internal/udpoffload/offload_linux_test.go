//go:build linux

package udpoffload

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestGROSizeIgnoresForeignControl checks the control-message walk on a
// message that is not UDP_GRO, on a UDP_SEGMENT one and on truncated input.
func TestGROSizeIgnoresForeignControl(t *testing.T) {
	b := make([]byte, unix.CmsgSpace(4)*2)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMP
	h.SetLen(unix.CmsgLen(4))
	h2 := (*unix.Cmsghdr)(unsafe.Pointer(&b[unix.CmsgSpace(4)]))
	h2.Level, h2.Type = unix.IPPROTO_UDP, unix.UDP_GRO
	h2.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgSpace(4)+unix.CmsgSpace(0)])) = 1200
	if got := GROSize(b); got != 1200 {
		t.Fatalf("GROSize = %d, want 1200", got)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, b[:3], b[:unix.CmsgSpace(4)+2]} {
		if got := GROSize(bad); got != 0 {
			t.Errorf("GROSize(%d bytes) = %d, want 0", len(bad), got)
		}
	}
	if got := GROSize(AppendGSO(nil, 1353)); got != 0 {
		t.Fatalf("a UDP_SEGMENT message read as UDP_GRO: %d", got)
	}
}

// TestGSOErrors checks which send errors mean the path cannot segment.
func TestGSOErrors(t *testing.T) {
	for _, e := range []unix.Errno{unix.EIO, unix.EINVAL, unix.ENOTSUP} {
		if !IsGSOErrno(e) {
			t.Errorf("%v not a GSO error", e)
		}
	}
	if IsGSOErrno(unix.EMSGSIZE) || IsGSOError(nil) {
		t.Error("EMSGSIZE or nil taken for a GSO error")
	}
}
