package node

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/pathsock"
)

// Status is the node's state, ready for JSON.
type Status struct {
	ID         string   `json:"id"`
	Overlay    string   `json:"overlay"`
	Local      []string `json:"local,omitempty"`
	Reflexive  string   `json:"nat_facing,omitempty"`
	Registered bool     `json:"registered"`
	Server     string   `json:"server,omitempty"`
	Relay      string   `json:"relay,omitempty"`
	// Transport is "udp", or "tcp" when UDP is blocked and the node runs
	// over a TLS stream tunnel.
	Transport string `json:"transport"`
	Error     string `json:"error,omitempty"`
	// ICEServers are the TURN servers and credentials the rendezvous
	// handed out, in the shape of WebRTC's RTCIceServer, ready for an
	// RTCPeerConnection's iceServers; empty when it hands out none.
	ICEServers []ICEServer  `json:"ice_servers,omitempty"`
	Peers      []PeerStatus `json:"peers"`
}

// ICEServer is one entry of WebRTC's iceServers: URLs such as
// "turn:relay.example:3478?transport=udp", with time-limited TURN REST API
// credentials (username "<unix-expiry>:<peer ID>").
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// PeerStatus is one known peer's path.
type PeerStatus struct {
	ID       string    `json:"id"`
	Overlay  string    `json:"overlay"`
	Path     string    `json:"path"` // direct, relay or none
	Remote   string    `json:"remote,omitempty"`
	RTTms    float64   `json:"rtt_ms"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// PingResult is one answered ping.
type PingResult struct {
	Peer    string         `json:"peer"`
	Overlay string         `json:"overlay"`
	Path    string         `json:"path"` // direct or relay
	Remote  netip.AddrPort `json:"remote"`
	RTT     time.Duration  `json:"rtt"`
}

// Status reports the node's registration, relay and peers.
func (n *Node) Status() Status {
	rz := n.rz.Status()
	st := Status{
		ID:         n.me.String(),
		Overlay:    n.me.OverlayAddr().String(),
		Registered: rz.Registered,
		Server:     n.server,
		Transport:  "udp",
		Error:      rz.LastError,
		Peers:      []PeerStatus{},
	}
	for _, c := range n.sock.Candidates() {
		st.Local = append(st.Local, c.String())
	}
	if len(st.Local) == 0 {
		st.Local = []string{n.sock.LocalAddrPort().String()}
	}
	if n.sock.Tunneled() {
		st.Transport = "tcp"
	}
	if rz.Reflexive.IsValid() {
		st.Reflexive = rz.Reflexive.String()
	}
	st.ICEServers = iceServers(rz.TURNURIs, rz.TURNUser, rz.TURNPass)
	if r, ok := n.sock.Relay(); ok {
		st.Relay = r.Addr.String()
	}
	for _, p := range n.sock.Peers() {
		ps := PeerStatus{
			ID:       p.ID.String(),
			Overlay:  p.ID.OverlayAddr().String(),
			Path:     p.Path,
			RTTms:    float64(p.RTT.Microseconds()) / 1000,
			LastSeen: p.LastSeen,
		}
		if p.Remote.IsValid() {
			ps.Remote = p.Remote.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// iceServers returns the TURN URIs with their credentials as WebRTC's
// iceServers, or nil when there are no URIs.
func iceServers(uris []string, user, pass string) []ICEServer {
	if len(uris) == 0 {
		return nil
	}
	return []ICEServer{{URLs: append([]string(nil), uris...), Username: user, Credential: pass}}
}

// Ping probes peer (a peer ID or overlay address) over its active path and
// reports the path, the remote address (the peer's, or the relay's) and the
// round-trip time. A peer not met yet is introduced through the rendezvous
// first.
func (n *Node) Ping(ctx context.Context, peer string) (PingResult, error) {
	t, err := parseTarget(peer)
	if err != nil {
		return PingResult{}, err
	}
	id, ok := n.knownID(t)
	if ok {
		// A peer never heard from may never have heard of us: the Punch
		// of our last introduction can be lost (the rendezvous instance
		// that held its flow had died), so ask for the introduction
		// again rather than probe a peer that drops what we send.
		if st, known := n.sock.Peer(id); !known || st.Path == pathsock.PathNone || st.LastSeen.IsZero() {
			ok = false
		}
	}
	if !ok {
		if id, err = n.introduce(ctx, t); err != nil {
			return PingResult{}, err
		}
	}
	// A fresh peer's relay path is usable at once; give punching a moment
	// only when there is no path at all yet.
	for {
		st, _ := n.sock.Peer(id)
		if st.Path != pathsock.PathNone {
			break
		}
		select {
		case <-ctx.Done():
			return PingResult{}, fmt.Errorf("node: ping %s: no path: %w", id.Short(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	st, err := n.pingUnheard(ctx, t, id)
	if err != nil {
		return PingResult{}, fmt.Errorf("node: %w", err)
	}
	return PingResult{Peer: id.String(), Overlay: id.OverlayAddr().String(), Path: st.Path, Remote: st.Remote, RTT: st.RTT}, nil
}

// reintroduceEvery is how often a ping to a peer never heard from asks the
// rendezvous to introduce them again while no reply comes: the first
// Punch may have gone to a peer whose rendezvous instance had just died,
// and the peer registers with another within about a second.
const reintroduceEvery = 250 * time.Millisecond

// pingUnheard probes id; while id was never heard from, it asks for the
// introduction again every reintroduceEvery until a reply or ctx's end.
func (n *Node) pingUnheard(ctx context.Context, t target, id crypto.PeerID) (pathsock.PeerStatus, error) {
	for {
		st, _ := n.sock.Peer(id)
		if !st.LastSeen.IsZero() {
			return n.sock.Ping(ctx, id)
		}
		pctx, cancel := context.WithTimeout(ctx, reintroduceEvery)
		st, err := n.sock.Ping(pctx, id)
		cancel()
		if err == nil || ctx.Err() != nil {
			return st, err
		}
		if _, err := n.introduce(ctx, t); err != nil {
			return st, err
		}
	}
}
