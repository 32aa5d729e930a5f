package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/keymesh/keymesh/node"
)

// Stream upgrade protocol name and the response header naming the peer.
const (
	upgradeProto = "keymesh-stream"
	headerPeer   = "Keymesh-Peer"
	headerStream = "Keymesh-Stream"
)

// closeWriter is a connection that can end its sending side alone.
type closeWriter interface{ CloseWrite() error }

// CloseWrite ends c's sending side when c supports it; it reports whether
// it could.
func CloseWrite(c net.Conn) bool {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite() == nil
	}
	return false
}

// Splice copies a to b and b to a until both directions end, passing each
// end on as a half-close, then closes both. An error in either direction
// closes both at once.
func Splice(a, b net.Conn) error {
	errc := make(chan error, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			CloseWrite(dst)
		}
		errc <- err
	}
	go cp(b, a)
	go cp(a, b)
	err := <-errc
	if err != nil {
		a.Close()
		b.Close()
	}
	err2 := <-errc
	a.Close()
	b.Close()
	if err == nil {
		err = err2
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// hijacked is an upgraded API connection: reads drain what the HTTP server
// had buffered before reading the socket again.
type hijacked struct {
	net.Conn
	r *bufio.Reader
}

func (h *hijacked) Read(p []byte) (int, error) { return h.r.Read(p) }

func (h *hijacked) CloseWrite() error {
	if cw, ok := h.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func wantsUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), upgradeProto)
}

// upgrade answers 101 and takes the connection over from the HTTP server.
func upgrade(w http.ResponseWriter, peer string, id uint64) (net.Conn, error) {
	rc := http.NewResponseController(w)
	c, brw, err := rc.Hijack()
	if err != nil {
		return nil, fmt.Errorf("hijack: %w", err)
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProto + "\r\n"
	if peer != "" {
		resp += headerPeer + ": " + peer + "\r\n"
	}
	resp += headerStream + ": " + strconv.FormatUint(id, 10) + "\r\n"
	resp += "\r\n"
	if _, err := brw.WriteString(resp); err != nil {
		c.Close()
		return nil, err
	}
	if err := brw.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	return &hijacked{Conn: c, r: brw.Reader}, nil
}

// serveStream upgrades the API request and splices it with a peer stream,
// tracking both so that Close ends them, and records how the stream ended
// for GET /v1/stream.
func (s *Server) serveStream(w http.ResponseWriter, stream net.Conn, what string) {
	res := s.results.add()
	api, err := upgrade(w, remotePeer(stream), res.id)
	if err != nil {
		stream.Close()
		res.finish(err)
		return
	}
	if !s.track(api) {
		api.Close()
		stream.Close()
		res.finish(net.ErrClosed)
		return
	}
	s.track(stream)
	defer s.untrack(api)
	defer s.untrack(stream)
	err = Splice(api, stream)
	if err != nil {
		s.log.Info("stream ended with an error", "stream", what, "err", err)
	}
	res.finish(err)
}

// handleDial opens a stream to a peer's port and splices it to the caller.
func (s *Server) handleDial(w http.ResponseWriter, r *http.Request) {
	if !wantsUpgrade(r) {
		writeError(w, http.StatusBadRequest, errors.New("dial needs `Upgrade: "+upgradeProto+"`"))
		return
	}
	q := r.URL.Query()
	peer := q.Get("peer")
	if peer == "" {
		writeError(w, http.StatusBadRequest, errors.New("missing peer"))
		return
	}
	port, err := parsePort(q.Get("port"), true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if peer, _, err = s.lookupName(peer); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if q.Get("proto") == "udp" {
		s.dialUDP(w, r, peer, port)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.DialTimeout)
	stream, err := s.node.DialPort(ctx, peer, port)
	code := statusFor(ctx, err)
	cancel()
	if err != nil {
		s.log.Info("dial failed", "peer", peer, "port", port, "err", err)
		writeError(w, code, err)
		return
	}
	s.log.Debug("stream opened", "peer", peer, "port", port)
	s.serveStream(w, stream, "dial "+peer)
}

// handleAccept waits for the next stream to a port and splices it to the
// caller.
func (s *Server) handleAccept(w http.ResponseWriter, r *http.Request) {
	if !wantsUpgrade(r) {
		writeError(w, http.StatusBadRequest, errors.New("accept needs `Upgrade: "+upgradeProto+"`"))
		return
	}
	port, err := parsePort(r.URL.Query().Get("port"), true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	q, release, err := s.acquireQueue(port)
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	defer release()
	var stream net.Conn
	select {
	case stream = <-q:
	case <-r.Context().Done():
		return
	}
	s.log.Debug("stream accepted", "port", port, "peer", remotePeer(stream))
	s.serveStream(w, stream, fmt.Sprintf("accept :%d", port))
}

// remotePeer names the peer at the other end of a stream: its ID when the
// connection can tell (a node stream, or a Peer() or PeerID() method), else
// its remote address.
func remotePeer(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*node.Addr); ok && a.ID != "" {
		return a.ID
	}
	switch v := c.(type) {
	case interface{ Peer() string }:
		return v.Peer()
	case interface{ PeerID() string }:
		return v.PeerID()
	}
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
