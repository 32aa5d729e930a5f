package rendezvouscmd

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/discovery"
)

// snapshotter saves the memory registry to a file (--registry-snapshot)
// every interval when it changed, and once more at shutdown; at start it
// restores it, so a restarted rendezvous keeps its registrations and its
// epoch.
type snapshotter struct {
	m    *discovery.Memory
	path string
	key  []byte
	log  *slog.Logger

	mu    sync.Mutex // one save at a time; guards saved
	saved uint64     // m.Changes() at the last save
}

func newSnapshotter(m *discovery.Memory, path string, key []byte, log *slog.Logger) *snapshotter {
	return &snapshotter{m: m, path: path, key: key, log: log}
}

// load restores the snapshot, if there is one. A bad one is logged and
// left alone: the registry starts empty, with a new epoch, and refills as
// peers hear it.
func (s *snapshotter) load() {
	n, err := s.m.LoadSnapshot(s.path, s.key)
	if err != nil {
		s.log.Warn("registry snapshot not restored: starting empty", "file", s.path, "err", err)
		return
	}
	s.mu.Lock()
	s.saved = s.m.Changes()
	s.mu.Unlock()
	if n > 0 {
		s.log.Info("registry restored from its snapshot", "file", s.path, "records", n)
	}
}

// save writes the snapshot when the registry changed since the last one.
func (s *snapshotter) save() {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m.Changes()
	if c == s.saved {
		return
	}
	if err := s.m.SaveSnapshot(s.path, s.key); err != nil {
		s.log.Warn("registry snapshot not saved", "file", s.path, "err", err)
		return
	}
	s.saved = c
}

// run saves every interval until ctx ends (the caller saves once more
// after the server stopped).
func (s *snapshotter) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.save()
		}
	}
}
