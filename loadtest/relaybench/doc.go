// Package relaybench measures relays side by side with one generator: the
// keymesh ticket relay, the keymesh TLS stream relay, keymesh TURN,
// Tailscale's derper and coturn, each a child process pinned to its own
// core while the generator (and the receiving sockets) run on another. For
// each server and flow count it steps the offered load up and reports the
// highest rate delivered with at most 0.1% loss, the server's CPU per
// delivered packet there, the one-way latency percentiles there, and the
// goodput when twice that rate is offered.
//
// The generator writes a run phase and its send time into every payload;
// receivers count only the current phase and bucket the latency. UDP
// servers (ticket relay, TURN) get up to Batch datagrams per sendmmsg from
// one socket per flow; the stream relay gets one WebSocket message per
// datagram through one tunnel per flow; derper gets one DERP frame per
// packet from one client per flow, sent by derpgen (tools/derper), which
// runs the same pacing with tailscale.com's own client so that the keymesh
// module does not depend on tailscale.com.
//
// Main is `loadtest relay`: it parses the command line and runs Run.
package relaybench
