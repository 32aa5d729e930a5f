// Package meshreg keeps the membership of an instance mesh (package mesh)
// in the deployment's shared Redis, for deployments whose instances come
// and go (auto-scaling groups) and so cannot be given a static peer list.
//
// The instances of one group (the relays, or the rendezvous servers) number
// themselves: each claims the lowest free number n from 1 to Config.Max by
// writing key <prefix>{<group>}:<n> with SET NX and a TTL, its value the
// instance's advertised mesh address and a random token of this process,
// and keeps the claim with a compare-and-expire every Config.Interval (1 s,
// at most TTL/4). A claim the instance finds lost (the key expired during a
// partition, or Redis was flushed) is claimed again, the same number first.
// The instance stops using its number once its lease runs out locally (3/4
// of the TTL after the last successful refresh was sent), before Redis can
// hand the number to another instance: two live instances do not use one
// number unless a process stalls for more than TTL/4 between its rounds.
// Tickets sealed under a number before it changed hands are not revoked:
// their packets reach the new holder, which sends them from its own
// address (best effort, as without a mesh) until the peer binds again.
//
// Each round also reads the group with one MGET of the Max keys (they
// share a hash slot, so this works on a Redis Cluster too): the members
// are what the mesh sends heartbeats to, what the relay's tickets name,
// and the source allow-list in front of the mesh's tag check. Redis
// grants nothing: a mesh message is accepted for its HMAC under the peer
// secret, never for an address found in Redis. What someone able to
// write the group's keys can do is bounded: at most Max members are read,
// values longer than a mesh address are ignored, and addresses that are
// unspecified, multicast, port 0, or loopback or link-local while this
// instance's own address is not, are refused; the rest get heartbeats
// (one small datagram per member per mesh.HeartbeatInterval) and, at
// worst, relay traffic whose ticket names their number, which is
// end-to-end encrypted.
package meshreg
