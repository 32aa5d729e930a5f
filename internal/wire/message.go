package wire

import "fmt"

// MsgType says what a sealed message holds.
type MsgType byte

// Message types. Peer to rendezvous: Register, Connect, Report. Rendezvous to peer:
// Registered, Challenge, ConnectReply, Punch, Error. Peer to peer: Probe,
// ProbeReply, PathUpdate.
const (
	MsgRegister     MsgType = 1
	MsgRegistered   MsgType = 2
	MsgChallenge    MsgType = 3
	MsgConnect      MsgType = 4
	MsgConnectReply MsgType = 5
	MsgPunch        MsgType = 6
	MsgError        MsgType = 7
	MsgReport       MsgType = 8
	MsgProbe        MsgType = 10
	MsgProbeReply   MsgType = 11
	MsgPathUpdate   MsgType = 12
)

func (t MsgType) String() string {
	switch t {
	case MsgRegister:
		return "register"
	case MsgRegistered:
		return "registered"
	case MsgChallenge:
		return "challenge"
	case MsgConnect:
		return "connect"
	case MsgConnectReply:
		return "connect-reply"
	case MsgPunch:
		return "punch"
	case MsgError:
		return "error"
	case MsgReport:
		return "report"
	case MsgProbe:
		return "probe"
	case MsgProbeReply:
		return "probe-reply"
	case MsgPathUpdate:
		return "path-update"
	}
	return fmt.Sprintf("msg(%d)", byte(t))
}

// Message is the plaintext of a sealed frame: a type, the sender's clock
// (Unix milliseconds, for replay windows) and a body.
//
//	[0] type  [1:9] time  [9:] body
type Message struct {
	Time int64
	Body Body
}

// Body is one message type's fields.
type Body interface {
	Type() MsgType
	appendTo(w *writer)
	readFrom(r *reader)
}

// AppendMessage appends the plaintext encoding of m.
func AppendMessage(b []byte, m Message) []byte {
	w := writer{b: b}
	w.u8(byte(m.Body.Type()))
	w.u64(uint64(m.Time))
	// Direct calls let w stay on the stack (an interface call would move
	// it to the heap: one allocation per message on a server's hot path).
	// Body's methods are unexported, so these are all its types.
	switch v := m.Body.(type) {
	case *Register:
		v.appendTo(&w)
	case *Registered:
		v.appendTo(&w)
	case *Challenge:
		v.appendTo(&w)
	case *Connect:
		v.appendTo(&w)
	case *ConnectReply:
		v.appendTo(&w)
	case *Punch:
		v.appendTo(&w)
	case *Error:
		v.appendTo(&w)
	case *Report:
		v.appendTo(&w)
	case *Probe:
		v.appendTo(&w)
	case *ProbeReply:
		v.appendTo(&w)
	case *PathUpdate:
		v.appendTo(&w)
	}
	return w.b
}

// ParseMessage decodes a message plaintext.
func ParseMessage(b []byte) (Message, error) {
	r := reader{b: b}
	t := MsgType(r.u8())
	ts := int64(r.u64())
	if r.err != nil {
		return Message{}, r.err
	}
	// Direct calls let r stay on the stack (see AppendMessage).
	var body Body
	switch t {
	case MsgRegister:
		v := &Register{}
		v.readFrom(&r)
		body = v
	case MsgRegistered:
		v := &Registered{}
		v.readFrom(&r)
		body = v
	case MsgChallenge:
		v := &Challenge{}
		v.readFrom(&r)
		body = v
	case MsgConnect:
		v := &Connect{}
		v.readFrom(&r)
		body = v
	case MsgConnectReply:
		v := &ConnectReply{}
		v.readFrom(&r)
		body = v
	case MsgPunch:
		v := &Punch{}
		v.readFrom(&r)
		body = v
	case MsgError:
		v := &Error{}
		v.readFrom(&r)
		body = v
	case MsgReport:
		v := &Report{}
		v.readFrom(&r)
		body = v
	case MsgProbe:
		v := &Probe{}
		v.readFrom(&r)
		body = v
	case MsgProbeReply:
		v := &ProbeReply{}
		v.readFrom(&r)
		body = v
	case MsgPathUpdate:
		v := &PathUpdate{}
		v.readFrom(&r)
		body = v
	default:
		return Message{}, fmt.Errorf("%w: unknown message type %d", ErrMalformed, t)
	}
	if err := r.done(); err != nil {
		return Message{}, fmt.Errorf("%s: %w", t, err)
	}
	return Message{Time: ts, Body: body}, nil
}
