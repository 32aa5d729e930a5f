package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// portEntry is one node port the daemon listens on: either an accept queue
// (streams wait for `peer listen` callers) or an exposed local TCP port.
type portEntry struct {
	ln     net.Listener
	expose bool
	queue  chan net.Conn // accept queue: unbuffered hand-over to callers

	sticky  bool // accept queue: stays open without callers (port 0)
	waiters int  // accept queue: callers waiting
	bg      bool // expose: kept until unexposed
	holders int  // expose: foreground `peer expose` callers

	stopOverlay func() // expose in userspace mode: stops the overlay listeners
}

// addQueueLocked starts an accept queue on ln for port. Caller holds mu.
func (s *Server) addQueueLocked(port uint16, ln net.Listener, sticky bool) *portEntry {
	e := &portEntry{ln: ln, queue: make(chan net.Conn), sticky: sticky}
	s.ports[port] = e
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(port, e)
	}()
	return e
}

// acceptLoop hands each incoming stream to a waiting caller, holding it for
// at most AcceptHold.
func (s *Server) acceptLoop(port uint16, e *portEntry) {
	s.eachStream(port, e, func(c net.Conn) {
		t := time.NewTimer(s.cfg.AcceptHold)
		defer t.Stop()
		select {
		case e.queue <- c:
		case <-t.C:
			s.log.Info("closed an incoming stream: nobody ran `peer listen` for it", "port", port, "peer", remotePeer(c), "waited", s.cfg.AcceptHold)
			c.Close()
		case <-s.ctx.Done():
			c.Close()
		}
	})
}

// eachStream runs handle, on a goroutine of its own, for each stream e's
// listener accepts, until the listener closes; then port's entry goes.
func (s *Server) eachStream(port uint16, e *portEntry, handle func(c net.Conn)) {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			s.removeIf(port, e)
			return
		}
		s.wg.Go(func() { handle(c) })
	}
}

func (s *Server) removeIf(port uint16, e *portEntry) {
	s.mu.Lock()
	if s.ports[port] == e {
		delete(s.ports, port)
	}
	s.mu.Unlock()
}

// acquireQueue returns the accept queue of port, opening it on the node when
// needed; release gives it back (closing it when it is no longer wanted).
func (s *Server) acquireQueue(port uint16) (<-chan net.Conn, func(), error) {
	s.mu.Lock()
	e := s.ports[port]
	if e != nil && e.expose {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("port %d is exposed to a local TCP port: %w", port, ErrPortInUse)
	}
	if e == nil {
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			return nil, nil, net.ErrClosed
		}
		// ListenPort does no I/O: holding mu keeps two callers from racing.
		ln, err := s.node.ListenPort(port)
		if err != nil {
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("listen on port %d: %w", port, err)
		}
		e = s.addQueueLocked(port, ln, false)
	}
	e.waiters++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		e.waiters--
		if e.waiters == 0 && !e.sticky && s.ports[port] == e {
			delete(s.ports, port)
			e.ln.Close()
		}
	}
	return e.queue, release, nil
}

// Expose connects streams arriving for port to the local TCP port of the
// same number on 127.0.0.1. With bg the port stays exposed until Unexpose;
// otherwise the returned release ends it (when no other caller holds it).
func (s *Server) Expose(port uint16, bg bool) (release func(), err error) {
	if port == 0 {
		return nil, fmt.Errorf("expose port 0: %w (port 0 is `peer listen`'s; want 1-65535)", ErrBadPort)
	}
	s.mu.Lock()
	e := s.ports[port]
	if e != nil && !e.expose {
		s.mu.Unlock()
		return nil, fmt.Errorf("port %d has a `peer listen` waiting: %w", port, ErrPortInUse)
	}
	if e == nil {
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			return nil, net.ErrClosed
		}
		ln, err := s.node.ListenPort(port)
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("expose port %d: %w", port, err)
		}
		e = &portEntry{ln: ln, expose: true}
		if s.cfg.Overlay != nil {
			if e.stopOverlay, err = s.exposeOverlay(port); err != nil {
				ln.Close()
				s.mu.Unlock()
				return nil, err
			}
		}
		s.ports[port] = e
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.exposeLoop(port, e)
		}()
		s.log.Info("exposed a local port to allowed peers", "port", port, "target", localTarget(port))
	}
	if bg {
		e.bg = true
		s.mu.Unlock()
		return func() {}, nil
	}
	e.holders++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		e.holders--
		s.dropExposeLocked(port, e)
	}, nil
}

// Unexpose ends a background expose of port.
func (s *Server) Unexpose(port uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.ports[port]
	if e == nil || !e.expose {
		return fmt.Errorf("port %d is not exposed", port)
	}
	e.bg = false
	s.dropExposeLocked(port, e)
	return nil
}

func (s *Server) dropExposeLocked(port uint16, e *portEntry) {
	if e.holders > 0 || e.bg || s.ports[port] != e {
		return
	}
	delete(s.ports, port)
	e.ln.Close()
	if e.stopOverlay != nil {
		e.stopOverlay()
	}
	s.log.Info("stopped exposing a local port", "port", port)
}

func localTarget(port uint16) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
}

// exposeLoop connects each stream for port to the local TCP service.
func (s *Server) exposeLoop(port uint16, e *portEntry) {
	s.eachStream(port, e, func(c net.Conn) {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		local, err := s.cfg.DialLocal(ctx, "tcp", localTarget(port))
		cancel()
		if err != nil {
			s.log.Info("exposed port: local service unreachable", "port", port, "peer", remotePeer(c), "err", err)
			c.Close()
			return
		}
		if !s.track(c) {
			c.Close()
			local.Close()
			return
		}
		s.track(local)
		defer s.untrack(c)
		defer s.untrack(local)
		if err := Splice(c, local); err != nil {
			s.log.Debug("exposed stream ended with an error", "port", port, "err", err)
		}
	})
}

// handleExpose: POST /v1/expose?port=N[&bg=1]. With bg it answers at once;
// otherwise it answers 200, then holds the request: the expose lasts as long
// as the caller stays connected.
func (s *Server) handleExpose(w http.ResponseWriter, r *http.Request) {
	port, err := parsePort(r.URL.Query().Get("port"), false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	bg := r.URL.Query().Get("bg") == "1"
	release, err := s.Expose(port, bg)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, ErrPortInUse) {
			code = http.StatusConflict
		} else if errors.Is(err, ErrBadPort) {
			code = http.StatusBadRequest
		}
		writeError(w, code, err)
		return
	}
	defer release()
	writeJSON(w, http.StatusOK, map[string]any{"port": port, "target": localTarget(port), "background": bg})
	if bg {
		return
	}
	_ = http.NewResponseController(w).Flush()
	select {
	case <-r.Context().Done():
	case <-s.ctx.Done():
	}
}

// handleUnexpose: DELETE /v1/expose?port=N.
func (s *Server) handleUnexpose(w http.ResponseWriter, r *http.Request) {
	port, err := parsePort(r.URL.Query().Get("port"), false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.Unexpose(port); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"port": port, "exposed": false})
}
