//go:build !linux

package udpoffload

// GSOSpace is 0: there is no UDP_SEGMENT here.
var GSOSpace = 0

// PutGSO does nothing: there is no offload here.
func PutGSO([]byte, int) {}

// AppendGSO returns b: there is no offload here.
func AppendGSO(b []byte, _ int) []byte { return b }

// GROSize is 0: reads are never coalesced here.
func GROSize([]byte) int { return 0 }

// IsGSOError is false: there is no offload here.
func IsGSOError(error) bool { return false }
