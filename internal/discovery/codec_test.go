package discovery

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		rec := randRecord(r)
		b, err := appendRecord(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !sameRecord(rec, got) {
			t.Fatalf("record %d: round trip changed it:\n put %+v\n got %+v", i, rec, got)
		}
		if id, ok := recordID(b); !ok || id != rec.ID {
			t.Fatalf("recordID = %v, %v", id, ok)
		}
	}
}

func TestCodecCompact(t *testing.T) {
	rec := Record{
		Reflexive:  netip.MustParseAddrPort("198.51.100.7:40000"),
		Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:40000"), netip.MustParseAddrPort("[fd00::2]:40000")},
		Tickets:    [][]byte{make([]byte, 99)},
		Policy:     Policy{AllowAny: true},
		Instance:   "rdv-1",
		Updated:    time.Now(),
	}
	rec.ID[0] = 1
	b, err := appendRecord(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	// 43 header + 7 reflexive + 1+7+19 candidates + 1+1+99 ticket + 1 policy + 1+5 instance + 1 home + 8 sent
	if want := 43 + 7 + 27 + 101 + 1 + 6 + 1 + 8; len(b) != want {
		t.Fatalf("encoded %d bytes, want %d", len(b), want)
	}
}

func TestCodecZoneDropped(t *testing.T) {
	rec := Record{Candidates: []netip.AddrPort{netip.MustParseAddrPort("[fe80::1%eth0]:5")}}
	b, _ := appendRecord(nil, rec)
	got, err := decodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort("[fe80::1]:5"); got.Candidates[0] != want {
		t.Fatalf("got %v, want %v", got.Candidates[0], want)
	}
}

func TestCodecRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	rec := randRecord(r)
	rec.Instance = "x"
	rec.Home = netip.MustParseAddrPort("10.0.0.1:3490")
	rec.Sent = time.UnixMilli(1_800_000_000_123)
	b, _ := appendRecord(nil, rec)
	if got := recordSent(b); got != 1_800_000_000_123 {
		t.Fatalf("recordSent = %d", got)
	}
	v11 := len(b) - 8 // the record as version 1.1 wrote it, without sent
	v10 := v11 - 7    // as version 1.0 wrote it, without home
	// Every truncation fails cleanly, but for the older forms.
	for n := range len(b) {
		if n == v10 || n == v11 {
			continue
		}
		if _, err := decodeRecord(b[:n]); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("truncated to %d of %d: err = %v, want ErrBadRecord", n, len(b), err)
		}
	}
	// A record from before home decodes with no home and no send time
	// (older writers), one from before sent with its home.
	if got, err := decodeRecord(b[:v10]); err != nil || got.Home.IsValid() || !got.Sent.IsZero() || got.Instance != "x" {
		t.Fatalf("record without home: %+v, %v", got, err)
	}
	if got, err := decodeRecord(b[:v11]); err != nil || got.Home != rec.Home || !got.Sent.IsZero() {
		t.Fatalf("record without sent: %+v, %v", got, err)
	}
	if recordSent(b[:v10]) != 0 || recordSent(b[:v11]) != 0 {
		t.Fatal("recordSent of a record without sent is not 0")
	}
	// Fields appended by a newer compatible version are ignored.
	if got, err := decodeRecord(append(bytes.Clone(b), 1, 2, 3)); err != nil || !sameRecord(rec, got) {
		t.Fatalf("with trailing bytes: %v", err)
	}
	// Another version is refused.
	v2 := bytes.Clone(b)
	v2[0] = recordVersion + 1
	if _, err := decodeRecord(v2); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("version %d: err = %v", v2[0], err)
	}
	// A huge count does not allocate: it is refused.
	huge := append(bytes.Clone(b[:fixedHeader]), addrNone, 0xff, 0xff, 0xff, 0xff, 0x0f)
	if _, err := decodeRecord(huge); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("huge count: err = %v", err)
	}
	// Too large to store.
	big := Record{Tickets: [][]byte{make([]byte, MaxRecordSize)}}
	if _, err := appendRecord(nil, big); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized record: err = %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		b, _ := appendRecord(nil, randRecord(r))
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{recordVersion})
	f.Add(make([]byte, fixedHeader))
	f.Add(append([]byte{recordVersion}, make([]byte, fixedHeader+5)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v does not wrap ErrBadRecord", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		b2, err := appendRecord(nil, rec)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if len(b2) > len(b)+1+8 { // the absent home and sent of an older record
			t.Fatalf("re-encoded %d bytes from %d", len(b2), len(b))
		}
		// The conditional Put reads what the decoder reads.
		if got, want := recordSent(b), sentMillis(rec.Sent); got != want {
			t.Fatalf("recordSent = %d, decoded Sent %d", got, want)
		}
		rec2, err := decodeRecord(b2)
		if err != nil || !sameRecord(rec, rec2) {
			t.Fatalf("re-decode: %v\n first %+v\nsecond %+v", err, rec, rec2)
		}
	})
}
