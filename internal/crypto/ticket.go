package crypto

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Ticket layout (TicketSize bytes):
//
//	[0]      key ID
//	[1:25]   XChaCha20-Poly1305 nonce
//	[25:99]  sealed: IPv6-mapped address (16) | port (2) | peer ID (32) | instance (2) | expiry, Unix seconds (6) | tag (16)
//
// The key ID and nonce are authenticated as additional data. The instance
// and expiry fields were one 8-byte expiry before relays had instance
// numbers: a ticket from then reads as instance 0 (none) with the same
// expiry, so old tickets open unchanged. The reverse does not hold: a relay
// from before instance numbers reads a ticket naming an instance as expiring
// centuries from now, so give relays instance numbers (--instance) only once
// every relay sharing the ticket keys runs a build that reads them.
const (
	TicketSize      = 1 + chacha20poly1305.NonceSizeX + ticketPlain + chacha20poly1305.Overhead
	ticketPlain     = 16 + 2 + 32 + 8
	ticketHeaderLen = 1 + chacha20poly1305.NonceSizeX
)

// Ticket is what a relay vouches for: that peer ID was reachable at Addr
// (as the relay saw it) until Expiry. Sealed, it is a capability: whoever
// holds it may have the relay forward packets to Addr.
type Ticket struct {
	Addr   netip.AddrPort
	ID     PeerID
	Expiry time.Time
	// Instance numbers the relay instance that took the bind, the one
	// holding the peer's flow; 0 when relays have no instance numbers.
	Instance uint16
}

// maxTicketExpiry is the largest expiry the 6-byte field holds.
const maxTicketExpiry = 1<<48 - 1

// TicketKeys seals and opens tickets. Every relay instance holds the same
// keys; the first is used to seal, all are accepted when opening, so a key
// can rotate while tickets sealed under the previous one still work.
type TicketKeys struct {
	sealID byte
	aeads  map[byte]cipher.AEAD
	now    func() time.Time
	cookie []byte // see CookieSecret
}

// NewTicketKeys builds a key set. keys maps key ID to a 32-byte key; sealID
// must be among them. now defaults to time.Now.
func NewTicketKeys(sealID byte, keys map[byte][]byte, now func() time.Time) (*TicketKeys, error) {
	if now == nil {
		now = time.Now
	}
	tk := &TicketKeys{sealID: sealID, aeads: make(map[byte]cipher.AEAD, len(keys)), now: now}
	for id, k := range keys {
		a, err := chacha20poly1305.NewX(k)
		if err != nil {
			return nil, fmt.Errorf("ticket key %d: %w", id, err)
		}
		tk.aeads[id] = a
	}
	if _, ok := tk.aeads[sealID]; !ok {
		return nil, fmt.Errorf("ticket key %d to seal with is not in the key set", sealID)
	}
	tk.cookie = deriveCookieSecret(keys[sealID])
	return tk, nil
}

// Seal seals t into a TicketSize-byte ticket appended to out.
func (tk *TicketKeys) Seal(out []byte, t Ticket) []byte {
	var hdr [ticketHeaderLen]byte
	hdr[0] = tk.sealID
	if _, err := rand.Read(hdr[1:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	var plain [ticketPlain]byte
	a := t.Addr.Addr().As16()
	copy(plain[:16], a[:])
	binary.BigEndian.PutUint16(plain[16:], t.Addr.Port())
	copy(plain[18:50], t.ID[:])
	exp := min(max(t.Expiry.Unix(), 0), maxTicketExpiry)
	binary.BigEndian.PutUint64(plain[50:], uint64(t.Instance)<<48|uint64(exp))
	out = append(out, hdr[:]...)
	return tk.aeads[tk.sealID].Seal(out, hdr[1:], plain[:], hdr[:])
}

// Open checks and opens a sealed ticket: its length, its key, its tag and
// its expiry, in that order.
func (tk *TicketKeys) Open(b []byte) (Ticket, error) {
	return tk.OpenWith(new(TicketScratch), b)
}

// TicketScratch is working memory for OpenWith. A forwarding loop keeps one
// per goroutine so that opening a ticket does not allocate.
type TicketScratch struct{ buf [ticketPlain]byte }

// OpenWith is Open using s as working memory; s must not be used by two
// goroutines at once.
func (tk *TicketKeys) OpenWith(s *TicketScratch, b []byte) (Ticket, error) {
	var t Ticket
	if len(b) < TicketSize {
		return t, ErrTicketTruncated
	}
	b = b[:TicketSize]
	aead, ok := tk.aeads[b[0]]
	if !ok {
		return t, ErrTicketUnknown
	}
	plain, err := aead.Open(s.buf[:0], b[1:ticketHeaderLen], b[ticketHeaderLen:], b[:ticketHeaderLen])
	if err != nil {
		return t, ErrTicketForged
	}
	var a [16]byte
	copy(a[:], plain[:16])
	t.Addr = netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), binary.BigEndian.Uint16(plain[16:]))
	copy(t.ID[:], plain[18:50])
	v := binary.BigEndian.Uint64(plain[50:])
	t.Instance = uint16(v >> 48)
	t.Expiry = time.Unix(int64(v&maxTicketExpiry), 0)
	if !tk.now().Before(t.Expiry) {
		return t, ErrTicketExpired
	}
	return t, nil
}

// ParseTicketKeys reads a ticket key file: one key a line, `<id> <64 hex
// digits>`, id from 0 to 255; '#' starts a comment. The first key seals;
// the others are still accepted (keep an old key listed for a grace period
// after rotating).
func ParseTicketKeys(b []byte, now func() time.Time) (*TicketKeys, error) {
	keys := map[byte][]byte{}
	first := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = strings.TrimSpace(s[:i])
		}
		if s == "" {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want `<key-id> <64 hex digits>`", line)
		}
		id, err := strconv.ParseUint(f[0], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("line %d: key id %q is not a number from 0 to 255", line, f[0])
		}
		k, err := hex.DecodeString(f[1])
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("line %d: key must be 64 hex digits (32 bytes); make one with `openssl rand -hex 32`", line)
		}
		if _, dup := keys[byte(id)]; dup {
			return nil, fmt.Errorf("line %d: key id %d listed twice", line, id)
		}
		keys[byte(id)] = k
		if first < 0 {
			first = int(id)
		}
	}
	if first < 0 {
		return nil, fmt.Errorf("no keys: add a line `1 <64 hex digits>` (e.g. from `openssl rand -hex 32`)")
	}
	return NewTicketKeys(byte(first), keys, now)
}

// LoadTicketKeyFile reads and parses a ticket key file, refusing one that
// others can read.
func LoadTicketKeyFile(path string, now func() time.Time) (*TicketKeys, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ticket key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ticket key file %s has mode %#o: readable by others; fix it with `chmod 600 %s`", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ticket key file: %w", err)
	}
	tk, err := ParseTicketKeys(b, now)
	if err != nil {
		return nil, fmt.Errorf("ticket key file %s: %w", path, err)
	}
	return tk, nil
}

// NewTicketKeyLine returns a fresh key file line with the given id.
func NewTicketKeyLine(id byte) string {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return fmt.Sprintf("%d %s\n", id, hex.EncodeToString(k))
}
