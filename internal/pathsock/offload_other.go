//go:build !linux

package pathsock

import "net"

func enableOffload(*net.UDPConn) (gso, gro bool) { return false, false }
func gsoControl(b []byte, _ int) []byte          { return b }
func groSize([]byte) int                         { return 0 }
func isGSOError(error) bool                      { return false }
