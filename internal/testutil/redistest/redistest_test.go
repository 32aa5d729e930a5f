package redistest

import (
	"errors"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if got, err := command(s.Addr(), "SET k v"); err != nil || got != "OK" {
		t.Fatalf("SET: %q %v", got, err)
	}
	s.Stop()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("server still answers after Stop")
	}
	s.Stop() // idempotent
	s.Restart()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	// Nothing is persisted: the restarted server starts empty.
	if got, err := command(s.Addr(), "GET k"); !errors.Is(err, errNil) {
		t.Fatalf("GET after restart: %q %v, want nil", got, err)
	}
}
