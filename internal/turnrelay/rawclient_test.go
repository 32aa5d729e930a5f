package turnrelay

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// rawClient speaks TURN message by message, so tests can send what a
// well-behaved client never would and see each answer as it is.
type rawClient struct {
	t                 testing.TB
	conn              net.Conn
	tcp               bool
	user, pass, realm string
	nonce             string
}

func dialRaw(t testing.TB, network, server, user, pass string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout(network, server, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, tcp: network[:3] == "tcp", user: user, pass: pass}
}

// send writes raw bytes.
func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next message (a whole frame on TCP), or an error after
// the deadline.
func (c *rawClient) read(d time.Duration) ([]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	if !c.tcp {
		buf := make([]byte, 2048)
		n, err := c.conn.Read(buf)
		return buf[:n], err
	}
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if hdr[0]&0xC0 == 0 {
		n += 16 // STUN: the length excludes the rest of the header
	} else {
		n = (n + 3) &^ 3 // ChannelData over TCP is padded
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.conn, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// roundTrip sends m and returns the answer with its transaction ID.
func (c *rawClient) roundTrip(m *stun.Message) *stun.Message {
	c.t.Helper()
	c.send(m.Raw)
	for {
		b, err := c.read(3 * time.Second)
		if err != nil {
			c.t.Fatalf("no answer to %v: %v", m.Type, err)
		}
		r := &stun.Message{Raw: b}
		if r.Decode() == nil && r.TransactionID == m.TransactionID {
			return r
		}
	}
}

// request sends an authenticated request of method with attrs, learning
// the realm and nonce from a 401/438 first, and returns the answer.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	for range 3 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.user, c.realm, c.pass))
		}
		r := c.roundTrip(stun.MustBuild(setters...))
		code := errCode(r)
		if code != int(stun.CodeUnauthorized) && code != int(stun.CodeStaleNonce) {
			return r
		}
		var realm stun.Realm
		var nonce stun.Nonce
		if realm.GetFrom(r) != nil || nonce.GetFrom(r) != nil {
			return r // a 401 without a challenge: a refusal
		}
		c.realm, c.nonce = realm.String(), nonce.String()
	}
	c.t.Fatalf("%v: still challenged after three tries", method)
	return nil
}

func errCode(m *stun.Message) int {
	var ec stun.ErrorCodeAttribute
	if m.Type.Class != stun.ClassErrorResponse || ec.GetFrom(m) != nil {
		return 0
	}
	return int(ec.Code)
}

// Attributes stun does not build itself.
func requestedTransport(proto byte) stun.Setter {
	return stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{proto, 0, 0, 0}}
}

func channelNumber(n uint16) stun.Setter {
	return stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(n >> 8), byte(n), 0, 0}}
}

func peerAddr(a *net.UDPAddr) stun.Setter {
	return xorAddrAs{stun.XORMappedAddress{IP: a.IP, Port: a.Port}, stun.AttrXORPeerAddress}
}

type xorAddrAs struct {
	a stun.XORMappedAddress
	t stun.AttrType
}

func (x xorAddrAs) AddTo(m *stun.Message) error { return x.a.AddToAs(m, x.t) }

// relayedAddr reads XOR-RELAYED-ADDRESS from an Allocate success.
func relayedAddr(t testing.TB, m *stun.Message) *net.UDPAddr {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("allocate answer %v without XOR-RELAYED-ADDRESS: %v", m, err)
	}
	return &net.UDPAddr{IP: a.IP, Port: a.Port}
}

// allocateRaw makes an allocation (UDP, or TCP per RFC 6062) and returns
// its relayed address.
func (c *rawClient) allocateRaw(proto byte) *net.UDPAddr {
	c.t.Helper()
	r := c.request(stun.MethodAllocate, requestedTransport(proto))
	if r.Type.Class != stun.ClassSuccessResponse {
		c.t.Fatalf("allocate: %v (code %d)", r, errCode(r))
	}
	return relayedAddr(c.t, r)
}
