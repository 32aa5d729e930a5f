package faults

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
	"github.com/keymesh/keymesh/loadtest/labrun"
)

// ciBounds are what the short form asserts: no byte lost, and recovery
// within three times issue 12's goals (the goals themselves are what
// `loadtest faults` reports against, on a quiet machine; the margin absorbs
// a CI machine running other packages' lab tests beside this one, where a
// 2 s bound failed once, while the old behaviour, a 12-31 s stall after a
// NAT flush and 19 s without new sessions after a restart, still fails).
var ciBounds = Goals{Stall: 3 * time.Second, UDPStall: 6 * time.Second, BestBack: 6 * time.Second, NewSession: 3 * time.Second}

// TestFaultsShort is the CI form of `loadtest faults`: a direct path cut,
// a symmetric NAT losing every mapping, a relay restart and a rendezvous
// restart (a new session to a peer registered before it), a session
// left idle past a symmetric NAT's 10 s UDP timeout, and UDP blocked
// for MinUDPBlockHold (the data must come back through the TCP stream
// relay before UDP does), once each, under a paced stream. Every byte must arrive (SHA-256 on both ends), the
// longest stall and the time until the best path is back must stay within
// ciBounds, as measured in the lab (the test itself times nothing).
func TestFaultsShort(t *testing.T) {
	ci.NeedRoot(t, "the NAT lab makes network namespaces, veth pairs and iptables rules")
	debpkg.Require(t, "conntrack", "conntrack")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var bins bintest.Binaries
	var err error
	if d := os.Getenv("KEYMESH_LAB_BIN"); d != "" {
		bins, err = bintest.Prebuilt(d)
	} else {
		bins, err = bintest.Build(ctx, t.TempDir())
	}
	if err != nil {
		t.Fatalf("binaries: %v", err)
	}
	lab, err := labrun.Start(ctx, labrun.Config{Bins: bins, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("start the lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			lab.DumpLogs(&b, 30)
			t.Logf("process logs (last lines):\n%s", b.String())
		}
		if err := lab.Close(); err != nil {
			t.Errorf("close the lab: %v", err)
		}
	})

	faults := []Fault{{Kind: DirectCut}, {Kind: NATFlush, NAT: natlab.Symmetric}, {Kind: RelayRestart}, {Kind: RendezvousRestart}, {Kind: NATIdle, NAT: natlab.Symmetric}, {Kind: UDPBlock}}
	var results []Result
	for i, f := range faults {
		o := Options{Rate: 4 << 20, Size: 24 << 20, At: 1500 * time.Millisecond, Hold: 2 * time.Second, Settle: 5 * time.Second, Name: "ci" + string(rune('a'+i))}
		if f.Kind == UDPBlock {
			o.Size = 40 << 20 // outlasts At, MinUDPBlockHold and the return
		}
		r := Run(ctx, lab, f, 1, o)
		js, _ := json.Marshal(r)
		t.Logf("%s", js)
		results = append(results, r)
	}
	for _, r := range results {
		switch {
		case r.Err != "":
			t.Errorf("%s: %s", r.Fault, r.Err)
		case !r.Intact:
			t.Errorf("%s: %d of %d bytes arrived, or their SHA-256 differs", r.Fault, r.Received, r.Sent)
		case r.Fault == string(UDPBlock) && (r.Lifted == nil || r.DataBack >= *r.Lifted):
			t.Errorf("%s: the data came back after %s, only once UDP did (lifted after %v): the stream relay did not take over", r.Fault, r.DataBack.Round(time.Millisecond), r.Lifted)
		case r.Fault == string(UDPBlock) && r.Stall > ciBounds.UDPStall:
			t.Errorf("%s: the stream stalled %s, bound %s", r.Fault, r.Stall.Round(time.Millisecond), ciBounds.UDPStall)
		case r.Fault != string(UDPBlock) && r.Stall > ciBounds.Stall:
			t.Errorf("%s: the stream stalled %s, bound %s", r.Fault, r.Stall.Round(time.Millisecond), ciBounds.Stall)
		case r.BestBack == nil:
			t.Errorf("%s: the %s path never came back (final path %q)", r.Fault, r.Best, r.Final)
		case *r.BestBack > ciBounds.BestBack:
			t.Errorf("%s: the %s path came back after %s, bound %s", r.Fault, r.Best, r.BestBack.Round(time.Millisecond), ciBounds.BestBack)
		case r.Fault == string(RendezvousRestart) && (r.NewSession == nil || *r.NewSession > ciBounds.NewSession):
			t.Errorf("%s: no new session to a peer registered before the restart within %s (%v)", r.Fault, ciBounds.NewSession, r.NewSession)
		}
	}
	rep := Summarize(results, DefaultGoals, 4<<20, 24<<20)
	var b strings.Builder
	_ = rep.Markdown(&b)
	t.Logf("against issue 12's goals:\n%s", b.String())
}
