package rzclient

import (
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// TestReportResentAfterChallenge: a report goes out with the client's
// cookie; after a challenge for reports it goes out again, once, with the
// new cookie; a later challenge resends nothing.
func TestReportResentAfterChallenge(t *testing.T) {
	fs := newFake(t, nil)
	want := wire.Report{Initiator: true, LocalNAT: wire.NATNone, RemoteNAT: wire.NATEndpointIndep, Outcome: wire.OutcomeDirect, FirstByteMs: 5, DirectMs: 9}
	if err := fs.client.Report(want); err != nil {
		t.Fatal(err)
	}
	r, ok := fs.next().Body.(*wire.Report)
	if !ok || r.Outcome != want.Outcome || r.Cookie != (crypto.Cookie{}) {
		t.Fatalf("first send %+v, want the report without a cookie", r)
	}
	cookie := crypto.Cookie{7, 7}
	fs.deliver(&wire.Challenge{Cookie: cookie, For: wire.MsgReport})
	r, ok = fs.next().Body.(*wire.Report)
	if !ok || r.Cookie != cookie || r.DirectMs != 9 || !r.Initiator {
		t.Fatalf("resend %+v, want the report with cookie %v", r, cookie)
	}
	fs.deliver(&wire.Challenge{Cookie: crypto.Cookie{8}, For: wire.MsgReport})
	select {
	case m := <-fs.sent:
		t.Fatalf("a second challenge resent %T", m.Body)
	default:
	}
	// With the cookie held, the next report carries it at once.
	if err := fs.client.Report(wire.Report{Outcome: wire.OutcomeRelayUDP}); err != nil {
		t.Fatal(err)
	}
	if r, _ := fs.next().Body.(*wire.Report); r == nil || r.Cookie != (crypto.Cookie{8}) {
		t.Fatalf("next report %+v, want cookie {8}", r)
	}
}
