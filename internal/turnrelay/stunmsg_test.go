package turnrelay

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/pion/stun/v4"
)

func TestParseSTUNAgreesWithPion(t *testing.T) {
	chrome, _ := hex.DecodeString(chromeAllocate)
	for _, raw := range [][]byte{
		stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw,
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
			&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}).Raw,
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
			stun.NewShortTermIntegrity("k")).Raw,
		chrome,
	} {
		var m stun.Message
		m.Raw = raw
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		got := parseSTUN(raw)
		if !got.ok || got.txid != m.TransactionID || got.method() != int(m.Type.Method) || got.class() != int(m.Type.Class) {
			t.Fatalf("%v: parsed %+v method %#x class %d", m.Type, got, got.method(), got.class())
		}
		if authenticated(raw) != m.Contains(stun.AttrMessageIntegrity) {
			t.Fatalf("%v: authenticated = %v", m.Type, authenticated(raw))
		}
	}
}

func TestForbidChannelBind(t *testing.T) {
	refused := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}).Raw
	if !forbidChannelBind(refused) || errorCode(refused) != codeForbidden {
		t.Fatalf("refused ChannelBind not made 403: code %d", errorCode(refused))
	}
	var m stun.Message
	m.Raw = refused
	if err := m.Decode(); err != nil || errCode(&m) != int(stun.CodeForbidden) {
		t.Fatalf("pion reads %v, code %d", err, errCode(&m))
	}
	// A real challenge (with a nonce) and other methods are left alone.
	for _, raw := range [][]byte{
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
			&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}, stun.NewNonce("n"), stun.NewRealm("r")).Raw,
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
			&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}).Raw,
	} {
		before := bytes.Clone(raw)
		if forbidChannelBind(raw) || !bytes.Equal(raw, before) {
			t.Fatalf("rewrote %x", before)
		}
	}
}

// FuzzSTUNMessage feeds the guard's decoder arbitrary datagrams: it must
// not panic, must agree with pion on what it accepts, and forbidChannelBind
// changes at most the error code's two bytes.
func FuzzSTUNMessage(f *testing.F) {
	chrome, _ := hex.DecodeString(chromeAllocate)
	f.Add(chrome)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}).Raw)
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{})
	f.Add(append(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Whatever pion's server decodes as STUN, the guard reads as the
		// same request (it rate-limits what pion will answer).
		if pm := (stun.Message{Raw: bytes.Clone(b)}); !isChannelData(b) && pm.Decode() == nil {
			g := parseAsPion(b)
			if !g.ok || g.txid != pm.TransactionID || g.class() != int(pm.Type.Class) || g.method() != int(pm.Type.Method) {
				t.Fatalf("guard reads %+v (class %d method %d), pion %v", g, g.class(), g.method(), pm.Type)
			}
		}
		m := parseSTUN(b)
		_ = m.class()
		_ = m.method()
		_ = errorCode(b)
		_ = authenticated(b)
		if m.ok {
			var pm stun.Message
			pm.Raw = bytes.Clone(b)
			if pm.Decode() == nil && pm.TransactionID != m.txid {
				t.Fatalf("transaction ID differs from pion's")
			}
		}
		c := bytes.Clone(b)
		if forbidChannelBind(c) {
			diff := 0
			for i := range c {
				if c[i] != b[i] {
					diff++
				}
			}
			if diff > 2 || errorCode(c) != codeForbidden {
				t.Fatalf("rewrite changed %d bytes, code %d", diff, errorCode(c))
			}
		}
	})
}
