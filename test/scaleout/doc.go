// Package scaleout holds the scale-out tests: several rendezvous instances
// sharing one UDP address (SO_REUSEPORT) and one Redis peer index, and
// several stateless relay instances on one address. The tests run the real
// binaries (cmd/rendezvous, cmd/relay) as processes, Debian's redis-server
// (internal/testutil/redistest) and simulated peers (internal/rzclient over
// loopback UDP sockets); they kill instances and stop Redis mid-test and
// assert, through each instance's admin metrics, which instance served what.
// See README.md in this directory for running N instances and the measured
// rates.
package scaleout
