package names

import (
	"golang.org/x/net/dns/dnsmessage"
)

// TTL of answers, in seconds. An address derived from a key never changes;
// a name changes only when this peer's configuration does.
const TTL = 60

// MaxGrowth is the most an answer exceeds its query by: one AAAA record
// whose name points at the question (2 name + 10 fixed + 16 address).
const MaxGrowth = 28

// maxAnswer bounds an answer: plain DNS over UDP without EDNS.
const maxAnswer = 512

// Answer returns the response to one DNS query for t's zone, or nil when
// the query gets none (it is a response, or no header parses). It reads
// only the header and the first question: other sections (EDNS options
// among them) are ignored and never echoed, and no answer exceeds the
// query by more than MaxGrowth bytes.
func Answer(t *Table, query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	if h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, nil, nil, len(query))
	}
	q, err := p.Question()
	if err != nil {
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil, len(query))
	}
	if _, err := p.Question(); err != dnsmessage.ErrSectionDone {
		resp.RCode = dnsmessage.RCodeFormatError // one question a query
		return build(resp, nil, nil, len(query))
	}
	name := q.Name.String()
	if q.Class != dnsmessage.ClassINET || q.Type == dnsmessage.TypeALL || !t.InZone(name) {
		resp.RCode = dnsmessage.RCodeRefused // not a resolver, no ANY
		return build(resp, &q, nil, len(query))
	}
	resp.Authoritative = true
	addr, ok := t.LookupAddr(name)
	if !ok {
		resp.RCode = dnsmessage.RCodeNameError
		return build(resp, &q, nil, len(query))
	}
	if q.Type != dnsmessage.TypeAAAA {
		return build(resp, &q, nil, len(query)) // the name exists, no record of this type
	}
	rr := &dnsmessage.AAAAResource{AAAA: addr.As16()}
	return build(resp, &q, rr, len(query))
}

// build packs a response; it returns nil rather than anything larger than
// the query allows.
func build(h dnsmessage.Header, q *dnsmessage.Question, aaaa *dnsmessage.AAAAResource, queryLen int) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 128), h)
	b.EnableCompression()
	if q != nil {
		if b.StartQuestions() != nil || b.Question(*q) != nil {
			return nil
		}
	}
	if aaaa != nil {
		if b.StartAnswers() != nil {
			return nil
		}
		rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: TTL}
		if b.AAAAResource(rh, *aaaa) != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil || len(out) > queryLen+MaxGrowth || len(out) > maxAnswer {
		return nil
	}
	return out
}
