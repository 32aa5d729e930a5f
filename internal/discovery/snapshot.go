package discovery

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A snapshot is the memory registry written to a file, so that a restarted
// rendezvous (same key) finds the peers registered before it and keeps its
// epoch: peers need not register again, and a new session to one of them
// works at once. The file is authenticated with an HMAC under a key the
// caller derives from a secret of its own (the rendezvous uses its server
// key), so a file that another user or a disk error changed is refused
// whole, and each record is decoded and checked as Put checks it.
//
// Layout (integers little endian):
//
//	magic    8 bytes  snapshotMagic
//	epoch    8 bytes  the registry's epoch (non-zero)
//	entries  expires (8 bytes, Unix ns, > 0), length (2 bytes, 1 to
//	         MaxRecordSize), the record's stored form (codec.go)
//	end      8 zero bytes
//	mac      32 bytes HMAC-SHA256 of everything before it
var snapshotMagic = [8]byte{'k', 'm', 's', 'n', 'a', 'p', 0, 1}

const snapshotMAC = sha256.Size

// ErrBadSnapshot is returned by LoadSnapshot for a file that is not a
// snapshot written under the same key (or is truncated or corrupt).
var ErrBadSnapshot = errors.New("bad registry snapshot")

// SnapshotKey derives the snapshot MAC key from a secret (the rendezvous
// passes its server key's seed).
func SnapshotKey(secret []byte) []byte {
	h := hmac.New(sha256.New, []byte("keymesh registry snapshot v1"))
	h.Write(secret)
	return h.Sum(nil)
}

// Changes counts the Puts and Deletes so far: a snapshot writer compares it
// with its last write's to skip a write when nothing changed.
func (m *Memory) Changes() uint64 { return m.changes.Load() }

// WriteSnapshot writes the live records and the epoch to w, authenticated
// under key. Each shard is copied under its read lock, one at a time.
func (m *Memory) WriteSnapshot(w io.Writer, key []byte) error {
	mac := hmac.New(sha256.New, key)
	bw := bufio.NewWriterSize(io.MultiWriter(w, mac), 64<<10)
	var hdr [16]byte
	copy(hdr[:8], snapshotMagic[:])
	binary.LittleEndian.PutUint64(hdr[8:], m.epoch.Load())
	bw.Write(hdr[:])
	var buf []byte
	for i := range m.shards {
		s := &m.shards[i]
		buf = buf[:0]
		s.mu.RLock()
		now := m.now().UnixNano()
		for off := 0; off < len(s.arena); off += hdrSize + s.bodyLen(off) {
			exp := s.expires(off)
			if exp == deadMark || exp <= now {
				continue
			}
			buf = binary.LittleEndian.AppendUint64(buf, uint64(exp))
			buf = binary.LittleEndian.AppendUint16(buf, uint16(s.bodyLen(off)))
			buf = append(buf, s.body(off)...)
		}
		s.mu.RUnlock()
		bw.Write(buf)
	}
	bw.Write(make([]byte, 8))
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write registry snapshot: %w", err)
	}
	if _, err := w.Write(mac.Sum(nil)); err != nil {
		return fmt.Errorf("write registry snapshot: %w", err)
	}
	return nil
}

// SaveSnapshot writes a snapshot to path (mode 0600) through a temporary
// file in the same directory and a rename, so a crash mid-write leaves the
// previous snapshot whole.
func (m *Memory) SaveSnapshot(path string, key []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("registry snapshot: %w", err)
	}
	defer os.Remove(f.Name())
	if err := m.WriteSnapshot(f, key); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("registry snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("registry snapshot: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("registry snapshot: %w", err)
	}
	return nil
}

// LoadSnapshot reads the snapshot at path into the registry and takes its
// epoch; it returns how many live records it restored. The MAC is checked
// over the whole file before any record is taken (a first pass), so a bad
// file changes nothing. Records that expired since are skipped, and so are
// those of peers whose live record holds a newer Register; the
// registry's cap (SetMaxRecords) bounds what is kept. A missing file is
// not an error (0 records).
func (m *Memory) LoadSnapshot(path string, key []byte) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("registry snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("registry snapshot: %w", err)
	}
	size := st.Size()
	if size < int64(len(snapshotMagic))+8+8+snapshotMAC {
		return 0, fmt.Errorf("%w: %d bytes", ErrBadSnapshot, size)
	}
	mac := hmac.New(sha256.New, key)
	if _, err := io.Copy(mac, io.LimitReader(f, size-snapshotMAC)); err != nil {
		return 0, fmt.Errorf("registry snapshot: %w", err)
	}
	var want [snapshotMAC]byte
	if _, err := io.ReadFull(f, want[:]); err != nil {
		return 0, fmt.Errorf("registry snapshot: %w", err)
	}
	if !hmac.Equal(mac.Sum(nil), want[:]) {
		return 0, fmt.Errorf("%w: its MAC does not match this key", ErrBadSnapshot)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("registry snapshot: %w", err)
	}
	return m.readSnapshot(bufio.NewReaderSize(io.LimitReader(f, size-snapshotMAC), 64<<10))
}

// readSnapshot takes the records of a snapshot whose MAC was checked.
func (m *Memory) readSnapshot(r io.Reader) (int, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if [8]byte(hdr[:8]) != snapshotMagic {
		return 0, fmt.Errorf("%w: not a snapshot (magic %x)", ErrBadSnapshot, hdr[:8])
	}
	epoch := binary.LittleEndian.Uint64(hdr[8:])
	if epoch == 0 {
		return 0, fmt.Errorf("%w: zero epoch", ErrBadSnapshot)
	}
	now := m.now()
	n := 0
	body := make([]byte, MaxRecordSize)
	for {
		var eh [10]byte
		if _, err := io.ReadFull(r, eh[:8]); err != nil {
			return n, fmt.Errorf("%w: entry %d: %v", ErrBadSnapshot, n, err)
		}
		exp := int64(binary.LittleEndian.Uint64(eh[:8]))
		if exp == 0 {
			break
		}
		if _, err := io.ReadFull(r, eh[8:]); err != nil {
			return n, fmt.Errorf("%w: entry %d: %v", ErrBadSnapshot, n, err)
		}
		l := int(binary.LittleEndian.Uint16(eh[8:]))
		if exp < 0 || l == 0 {
			return n, fmt.Errorf("%w: entry %d: expiry %d, length %d", ErrBadSnapshot, n, exp, l)
		}
		if _, err := io.ReadFull(r, body[:l]); err != nil {
			return n, fmt.Errorf("%w: entry %d: %v", ErrBadSnapshot, n, err)
		}
		rec, err := decodeRecord(body[:l])
		if err != nil {
			return n, fmt.Errorf("%w: entry %d: %w", ErrBadSnapshot, n, err)
		}
		ttl := time.Unix(0, exp).Sub(now)
		if ttl <= 0 {
			continue
		}
		switch err := m.Put(context.Background(), rec, ttl); {
		case errors.Is(err, ErrNotNewer):
			continue // the peer registered since: its newer record stays
		case err != nil:
			return n, fmt.Errorf("%w: entry %d: %w", ErrBadSnapshot, n, err)
		}
		n++
	}
	if b, err := io.ReadAll(io.LimitReader(r, 1)); err != nil || len(b) != 0 {
		return n, fmt.Errorf("%w: bytes after the end mark", ErrBadSnapshot)
	}
	m.epoch.Store(epoch)
	return n, nil
}
