package daemon

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The byte stream of an upgraded API connection cannot carry an error: a
// stream the peer reset looks like an ordinary end. So the daemon records
// how each stream ended, and the CLI asks (GET /v1/stream?id=N) once its
// side is done, to exit non-zero when the transfer failed.

// resultKeep is how long a finished stream's outcome waits to be asked for.
const resultKeep = time.Minute

type streamResult struct {
	id   uint64
	done chan struct{}
	err  error
	end  time.Time
}

func (r *streamResult) finish(err error) {
	r.err = err
	r.end = time.Now()
	close(r.done)
}

type results struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*streamResult
}

// add registers a new stream, forgetting outcomes nobody asked for.
func (rs *results) add() *streamResult {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[uint64]*streamResult{}
	}
	now := time.Now()
	for id, r := range rs.m {
		select {
		case <-r.done:
			if now.Sub(r.end) > resultKeep {
				delete(rs.m, id)
			}
		default:
		}
	}
	rs.next++
	r := &streamResult{id: rs.next, done: make(chan struct{})}
	rs.m[r.id] = r
	return r
}

func (rs *results) get(id uint64) *streamResult {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.m[id]
}

func (rs *results) remove(id uint64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.m, id)
}

// StreamResult is the answer of GET /v1/stream: how a stream ended.
type StreamResult struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

// handleStreamResult: GET /v1/stream?id=N waits (up to 10 s) for the
// stream to end and says whether it ended cleanly.
func (s *Server) handleStreamResult(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, errors.New("id: want a stream number"))
		return
	}
	res := s.results.get(id)
	if res == nil {
		writeError(w, http.StatusNotFound, errors.New("no such stream (or its outcome was already read)"))
		return
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-res.done:
	case <-t.C:
		writeError(w, http.StatusGatewayTimeout, errors.New("stream still open"))
		return
	case <-r.Context().Done():
		return
	}
	s.results.remove(id)
	out := StreamResult{ID: id}
	if res.err != nil {
		out.Error = res.err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}
