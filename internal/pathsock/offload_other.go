//go:build !linux

package pathsock

import "net"

func enableOffload(*net.UDPConn) (gso, gro bool) { return false, false }
