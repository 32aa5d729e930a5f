// Package e2e tests the mesh between instances with the real rendezvous and
// relay binaries, two instances of each and a real redis-server: a Punch and
// a relayed packet for peer B leave from B's home instance when A's
// requests land on the other instance, and a stranger's forged mesh message
// is dropped. TestHomeInstance runs on loopback, each instance on a
// loopback address of its own; TestHomeInstanceBehindNAT runs in a natlab
// network-namespace lab with B behind a real Linux NAT that filters by
// address, where only the home instance's sends get in. The package has no
// code outside its tests.
package e2e
