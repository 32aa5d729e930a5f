package relaybench

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// TestRelayCompareShort runs `loadtest relay --short`: the same generator
// against the ticket relay, the stream relay, keymesh TURN, derper (built
// from tools/derper) and coturn, and asserts that every server delivered
// packets in every step and has its row in the table. It asserts no rate,
// CPU or latency: the short form's load is tiny and the machine shared.
func TestRelayCompareShort(t *testing.T) {
	debpkg.Require(t, coturn.ServerProgram, coturn.Package)
	c, err := parseRelayCompare([]string{"--short"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var log strings.Builder
	md, data, err := relayCompare(ctx, c, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("\n%s\n%s", log.String(), md)
	got := map[string]bool{}
	for _, sw := range data.Sweeps {
		got[sw.Server] = true
		if len(sw.Steps) < 2 {
			t.Errorf("%s: %d steps, want a step and the overload step at least", sw.Server, len(sw.Steps))
		}
		for i, st := range sw.Steps {
			if st.Delivered <= 0 || st.Sent <= 0 {
				t.Errorf("%s step %d: sent %.0f, delivered %.0f pps: nothing went through", sw.Server, i, st.Sent, st.Delivered)
			}
		}
	}
	for _, s := range AllServers {
		if !got[s] {
			t.Errorf("no sweep of %s", s)
		}
		if !strings.Contains(md, "| "+Title[s]+" |") {
			t.Errorf("table lacks %s:\n%s", s, md)
		}
	}
}

func TestParseRelayCompare(t *testing.T) {
	c, err := parseRelayCompare([]string{"--against", "coturn", "--servers", "ticket", "--flows", "10,100", "--repeat", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.opts.Servers, ",") != "ticket,coturn" || len(c.opts.Flows) != 2 || c.opts.Repeat != 3 || len(c.opts.Segments) != 2 || c.opts.Segments[1] != 16 {
		t.Fatalf("parsed %+v", c.opts)
	}
	for _, bad := range [][]string{
		{"--against", "nginx"}, {"--servers", "", "--against", ""}, {"--flows", "0"}, {"--flows", "10,10"}, {"--rates", "200,100"},
		{"--size", "9000"}, {"--segments", "0"}, {"--segments", "1,1"}, {"--segments", "65"}, {"--segments", "60"}, {"--repeat", "0"}, {"--server-core", "1", "--generator-core", "1"}, {"extra"},
	} {
		if _, err := parseRelayCompare(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
