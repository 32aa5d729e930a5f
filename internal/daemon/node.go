package daemon

import (
	"context"

	"github.com/keymesh/keymesh/node"
)

// FromNode adapts a running *node.Node to the daemon's Node.
func FromNode(n *node.Node) Node { return nodeAdapter{n} }

type nodeAdapter struct{ *node.Node }

func (a nodeAdapter) Ping(ctx context.Context, peer string) (PingResult, error) {
	r, err := a.Node.Ping(ctx, peer)
	if err != nil {
		return PingResult{}, err
	}
	res := PingResult{Peer: r.Peer, Overlay: r.Overlay, Path: r.Path, RTT: r.RTT, RTTms: float64(r.RTT.Microseconds()) / 1000}
	if r.Remote.IsValid() {
		res.Remote = r.Remote.String()
	}
	return res, nil
}

func (a nodeAdapter) Status() Status {
	s := a.Node.Status()
	st := Status{
		ID: s.ID, Overlay: s.Overlay, Local: s.Local, Reflexive: s.Reflexive, Registered: s.Registered,
		Server: s.Server, Relay: s.Relay, Transport: s.Transport, Error: s.Error, Peers: make([]PeerStatus, 0, len(s.Peers)),
	}
	for _, is := range s.ICEServers {
		st.ICEServers = append(st.ICEServers, ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	for _, p := range s.Peers {
		st.Peers = append(st.Peers, PeerStatus{ID: p.ID, Overlay: p.Overlay, Path: p.Path, Remote: p.Remote, RTTms: p.RTTms, LastSeen: p.LastSeen})
	}
	return st
}
