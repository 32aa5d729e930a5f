// Package e2e tests the mesh between instances with the real rendezvous and
// relay binaries, two of each, on loopback addresses of their own and a
// real redis-server: a Punch and a relayed packet for peer B leave from B's
// home instance when A's requests land on the other instance, and a
// stranger's forged mesh message is dropped. The package has no code
// outside its test.
package e2e
