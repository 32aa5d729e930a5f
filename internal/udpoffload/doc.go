// Package udpoffload holds the Linux UDP segmentation offload pieces that
// the relay's batched loop and the peer's path layer share: the UDP_SEGMENT
// control message a send carries (one send for a run of same-size
// datagrams to one address), the run being built and its bounds (Run,
// Join, MaxSegs, MaxGSOBytes), the UDP_GRO segment size a coalesced read
// reports, and which send errors mean the path cannot segment. Elsewhere
// than Linux there is no offload: GROSize is 0 and nothing is a GSO error.
package udpoffload
