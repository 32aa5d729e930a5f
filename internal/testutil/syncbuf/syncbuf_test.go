package syncbuf

import (
	"strings"
	"testing"
)

func TestBufferKeepsTheFirstMax(t *testing.T) {
	var b Buffer
	b.Write([]byte("hello "))
	b.Write([]byte(strings.Repeat("x", Max)))
	b.Write([]byte("dropped"))
	if s := b.String(); !strings.HasPrefix(s, "hello x") || strings.Contains(s, "dropped") {
		t.Fatalf("buffer holds %d bytes ending %q", len(s), s[len(s)-8:])
	}
}
