package daemon

import (
	"context"
	"github.com/keymesh/keymesh/internal/netcheck"
	"github.com/keymesh/keymesh/internal/overlay"
	"net"
	"net/netip"
	"time"
)

// Node is what the daemon needs of a running keymesh node (node.Node). It is
// an interface so that the API handlers can be unit-tested with a fake; the
// real thing is wrapped by FromNode.
type Node interface {
	ID() string
	OverlayAddr() netip.Addr
	// DialPort opens a stream to port of peer (a peer ID or overlay address).
	DialPort(ctx context.Context, peer string, port uint16) (net.Conn, error)
	// Listen returns the listener of streams to port 0.
	Listen() net.Listener
	// ListenPort returns a listener of streams to port (not 0).
	ListenPort(port uint16) (net.Listener, error)
	Ping(ctx context.Context, peer string) (PingResult, error)
	Status() Status
	// Netcheck measures the node's network (NAT behaviour, relays).
	Netcheck(ctx context.Context) (netcheck.Report, error)
}

// Status is the node's state as the local API reports it.
type Status struct {
	ID         string   `json:"id"`
	Overlay    string   `json:"overlay"`
	Local      []string `json:"local,omitempty"`
	Reflexive  string   `json:"nat_facing,omitempty"`
	Registered bool     `json:"registered"`
	Server     string   `json:"server,omitempty"`
	Relay      string   `json:"relay,omitempty"`
	Transport  string   `json:"transport,omitempty"`
	Error      string   `json:"error,omitempty"`
	// ICEServers are the TURN servers and credentials the node received,
	// in WebRTC's RTCIceServer shape (see node.ICEServer).
	ICEServers []ICEServer  `json:"ice_servers,omitempty"`
	Peers      []PeerStatus `json:"peers"`
}

// ICEServer is one entry of WebRTC's iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// PeerStatus is one known peer in Status.
type PeerStatus struct {
	ID       string    `json:"id"`
	Overlay  string    `json:"overlay"`
	Path     string    `json:"path"`
	Remote   string    `json:"remote,omitempty"`
	RTTms    float64   `json:"rtt_ms"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// DaemonStatus is the answer of GET /v1/status: the node's Status plus what
// the daemon itself serves.
type DaemonStatus struct {
	Status
	Socket  string   `json:"socket,omitempty"`
	SOCKS5  string   `json:"socks5,omitempty"`
	Exposed []uint16 `json:"exposed,omitempty"`
	// Packets counts the overlay IP packets (userspace or TUN mode).
	Packets *overlay.Stats `json:"packets,omitempty"`
	Version string         `json:"version,omitempty"`
}

// PingResult is one answered ping.
type PingResult struct {
	Peer    string        `json:"peer"`
	Overlay string        `json:"overlay"`
	Path    string        `json:"path"`
	Remote  string        `json:"remote"`
	RTT     time.Duration `json:"-"`
	RTTms   float64       `json:"rtt_ms"`
}

// apiError is the body of every failed API request.
type apiError struct {
	Error string `json:"error"`
}
