package bintest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPrebuilt(t *testing.T) {
	dir := t.TempDir()
	if _, err := Prebuilt(dir); err == nil {
		t.Fatal("empty dir accepted")
	}
	for _, n := range []string{"rendezvous", "relay", "peer"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := Prebuilt(dir)
	if err != nil || b.Peer != filepath.Join(dir, "peer") {
		t.Fatalf("got %+v, %v", b, err)
	}
}
