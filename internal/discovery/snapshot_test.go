package discovery

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotRoundTrip: a registry restored from a snapshot has every live
// record of the one that wrote it, their expiry, and its epoch.
func TestSnapshotRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	src := NewMemory(clk.Now)
	r := rand.New(rand.NewPCG(1, 2))
	var recs []Record
	for i := range 300 {
		rec := randRecord(r)
		ttl := time.Minute
		if i%10 == 0 {
			ttl = time.Second // expired by the time it is loaded
		}
		if err := src.Put(ctx, rec, ttl); err != nil {
			t.Fatal(err)
		}
		if ttl == time.Minute {
			recs = append(recs, rec)
		}
	}
	key := SnapshotKey([]byte("server seed"))
	path := filepath.Join(t.TempDir(), "registry.snap")
	if err := src.SaveSnapshot(path, key); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, mode %v; want 0600", err, fi.Mode())
	}
	clk.Add(2 * time.Second)
	dst := NewMemory(clk.Now)
	n, err := dst.LoadSnapshot(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(recs) {
		t.Errorf("restored %d records, want %d (the live ones)", n, len(recs))
	}
	for _, rec := range recs {
		got, err := dst.Get(ctx, rec.ID)
		if err != nil || !sameRecord(got, rec) {
			t.Fatalf("record %s: %v\n got %+v\nwant %+v", rec.ID.Short(), err, got, rec)
		}
	}
	we, _ := src.Epoch(ctx)
	ge, _ := dst.Epoch(ctx)
	if ge != we {
		t.Errorf("restored epoch %x, want the writer's %x", ge, we)
	}
	// The restored records keep their expiry, not a fresh TTL.
	clk.Add(59 * time.Second)
	if _, err := dst.Get(ctx, recs[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("a restored record outlived its original expiry: %v", err)
	}
}

// TestSnapshotRefused: a snapshot under another key, with one byte changed,
// or cut short is refused whole, and the registry keeps its epoch and
// takes no record. A missing file restores nothing and is no error.
func TestSnapshotRefused(t *testing.T) {
	ctx := context.Background()
	src := NewMemory(nil)
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		if err := src.Put(ctx, randRecord(r), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	key := SnapshotKey([]byte("server seed"))
	var good bytes.Buffer
	if err := src.WriteSnapshot(&good, key); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good.Bytes())
	flipped[40] ^= 1
	cases := map[string]struct {
		b   []byte
		key []byte
	}{
		"other key":   {good.Bytes(), SnapshotKey([]byte("another server"))},
		"flipped bit": {flipped, key},
		"cut short":   {good.Bytes()[:good.Len()-40], key},
		"empty":       {nil, key},
	}
	for name, c := range cases {
		path := filepath.Join(t.TempDir(), "snap")
		if err := os.WriteFile(path, c.b, 0o600); err != nil {
			t.Fatal(err)
		}
		dst := NewMemory(nil)
		e0, _ := dst.Epoch(ctx)
		n, err := dst.LoadSnapshot(path, c.key)
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: err %v, want ErrBadSnapshot", name, err)
		}
		l, _ := dst.Len(ctx)
		e1, _ := dst.Epoch(ctx)
		if n != 0 || l != 0 || e1 != e0 {
			t.Errorf("%s: took %d records (len %d), epoch %x -> %x; want nothing changed", name, n, l, e0, e1)
		}
	}
	if n, err := NewMemory(nil).LoadSnapshot(filepath.Join(t.TempDir(), "none"), key); n != 0 || err != nil {
		t.Errorf("missing file: %d, %v; want 0, nil", n, err)
	}
}

// TestSnapshotCap: a snapshot larger than the registry's cap restores at
// most the cap (the table stays bounded whatever the file holds).
func TestSnapshotCap(t *testing.T) {
	ctx := context.Background()
	src := NewMemory(nil)
	r := rand.New(rand.NewPCG(5, 6))
	for range 4 * numShards {
		if err := src.Put(ctx, randRecord(r), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	key := SnapshotKey([]byte("k"))
	path := filepath.Join(t.TempDir(), "snap")
	if err := src.SaveSnapshot(path, key); err != nil {
		t.Fatal(err)
	}
	dst := NewMemory(nil)
	dst.SetMaxRecords(numShards)
	if _, err := dst.LoadSnapshot(path, key); err != nil {
		t.Fatal(err)
	}
	if l, _ := dst.Len(ctx); l > numShards {
		t.Errorf("restored %d records into a registry capped at %d", l, numShards)
	}
}

// FuzzSnapshot: the snapshot reader (past the MAC check) never panics and
// keeps the registry bounded by its cap, whatever the bytes.
func FuzzSnapshot(f *testing.F) {
	src := NewMemory(nil)
	r := rand.New(rand.NewPCG(7, 8))
	for range 3 {
		_ = src.Put(context.Background(), randRecord(r), time.Minute)
	}
	var b bytes.Buffer
	_ = src.WriteSnapshot(&b, []byte("k"))
	f.Add(b.Bytes()[:b.Len()-snapshotMAC])
	f.Add(snapshotMagic[:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := NewMemory(nil)
		m.SetMaxRecords(numShards)
		n, _ := m.readSnapshot(bytes.NewReader(b))
		if l, _ := m.Len(context.Background()); l > numShards || n < 0 {
			t.Fatalf("len %d, n %d", l, n)
		}
	})
}
