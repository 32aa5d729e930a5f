package udpoffload

// The bounds of one segmented send (UDP_SEGMENT), for every sender in the
// project: the kernel's UDP_MAX_SEGMENTS is 64 on older kernels, 128 on
// newer ones, and a send carries at most 65,507 payload bytes.
const (
	MaxSegs     = 64
	MaxGSOBytes = 65000
)

// Run is one segmented message being built: Segs datagrams of Size bytes
// each, Bytes in all. Only a run's last datagram may be shorter than Size,
// so a short one closes it (Open false).
type Run struct {
	Size, Segs, Bytes int
	Open              bool
}

// Fits reports whether a datagram of n bytes may join the run.
func (r *Run) Fits(n int) bool {
	return r.Open && n > 0 && n <= r.Size && r.Segs < MaxSegs && r.Bytes+n <= MaxGSOBytes
}
