// Package matrix is the traversal-success matrix of the NAT lab: which NAT
// type pairs must end on a direct path and which may only relay (the
// expected-outcome table), the per-trial results, their summary per ordered
// pair, and the report a person reads (Markdown and an SVG heat map) and the
// one other tools read (matrix.json, whose shape is fixed: see Report).
package matrix

import (
	"fmt"
	"sort"
	"time"
)

// Outcome is how a trial ended, or how a pair is expected to end.
type Outcome string

// Outcomes, best first.
const (
	Direct Outcome = "direct"
	Relay  Outcome = "relay"
	None   Outcome = "none"
)

func (o Outcome) rank() int {
	switch o {
	case Direct:
		return 2
	case Relay:
		return 1
	}
	return 0
}

// AtLeast reports whether o is as good as want.
func (o Outcome) AtLeast(want Outcome) bool { return o.rank() >= want.rank() }

// NAT type names, as in the lab (internal/natlab).
const (
	Public         = "public"
	FullCone       = "full-cone"
	PortRestricted = "port-restricted"
	Symmetric      = "symmetric"
	Double         = "double"
	UDPBlocked     = "udp-blocked"
	SameNAT        = "same-nat"
)

// PairTypes are the types that pair with each other; same-nat is a scenario
// of its own (two peers behind one NAT), reported as its own row.
var PairTypes = []string{Public, FullCone, PortRestricted, Symmetric, Double, UDPBlocked}

// easyMapping reports whether a type maps endpoint-independently (one public
// port for every destination): every type but symmetric; a double NAT of two
// port-restricted layers is endpoint-independent as a whole.
func easyMapping(t string) bool { return t != Symmetric && t != UDPBlocked }

// openFiltering reports whether unsolicited packets get in.
func openFiltering(t string) bool { return t == Public || t == FullCone }

// Expected is the expected-outcome table. With birthday-paradox punching an
// easy side meets a hard (symmetric) side directly; two hard sides cannot
// meet, and nothing meets a side without UDP but through the TCP relay.
func Expected(a, b string) Outcome {
	if a == SameNAT || b == SameNAT {
		return Direct // over the LAN
	}
	if a == UDPBlocked || b == UDPBlocked {
		return Relay
	}
	if !easyMapping(a) && !easyMapping(b) {
		return Relay
	}
	return Direct
}

// Why explains an expected outcome in a few words, for the README table.
func Why(a, b string) string {
	switch {
	case a == SameNAT:
		return "LAN candidates"
	case a == UDPBlocked || b == UDPBlocked:
		return "no UDP: TCP stream relay"
	case !easyMapping(a) && !easyMapping(b):
		return "two hard NATs"
	case !easyMapping(a) || !easyMapping(b):
		other := a
		if !easyMapping(a) {
			other = b
		}
		if openFiltering(other) {
			return "open side takes the hard side's probe"
		}
		return "birthday-paradox punching"
	}
	return "endpoint-independent mapping"
}

// Trial is one attempt of A to reach B.
type Trial struct {
	A, B    string
	Outcome Outcome
	// FirstByte is the time from asking to connect to the first reply;
	// ToDirect the time until the path was direct (zero if it never was).
	FirstByte, ToDirect time.Duration
	Err                 string
}

// Pair is the summary of one ordered pair; its JSON shape is fixed.
type Pair struct {
	A              string   `json:"a"`
	B              string   `json:"b"`
	Trials         int      `json:"trials"`
	Direct         int      `json:"direct"`
	Relay          int      `json:"relay"`
	Failed         int      `json:"failed"`
	Expected       Outcome  `json:"expected"`
	FirstByteMsP50 *float64 `json:"first_byte_ms_p50"`
	DirectMsP50    *float64 `json:"direct_ms_p50"`
}

// Met reports whether every trial of the pair ended at least as well as
// expected.
func (p Pair) Met() bool {
	switch p.Expected {
	case Direct:
		return p.Direct == p.Trials
	case Relay:
		return p.Failed == 0
	}
	return true
}

// Report is the content of matrix.json: {"pairs": [...]}, one object per
// ordered pair, in table order.
type Report struct {
	Pairs []Pair `json:"pairs"`
}

// Summarize folds trials into pairs, in the order of types (each ordered
// pair of PairTypes that appears, then same-nat).
func Summarize(trials []Trial) Report {
	type key struct{ a, b string }
	by := map[key][]Trial{}
	var keys []key
	for _, t := range trials {
		k := key{t.A, t.B}
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], t)
	}
	order := func(s string) int {
		for i, t := range PairTypes {
			if t == s {
				return i
			}
		}
		return len(PairTypes)
	}
	sort.SliceStable(keys, func(i, j int) bool {
		if order(keys[i].a) != order(keys[j].a) {
			return order(keys[i].a) < order(keys[j].a)
		}
		return order(keys[i].b) < order(keys[j].b)
	})
	var r Report
	for _, k := range keys {
		ts := by[k]
		p := Pair{A: k.a, B: k.b, Trials: len(ts), Expected: Expected(k.a, k.b)}
		var fb, dir []float64
		for _, t := range ts {
			switch t.Outcome {
			case Direct:
				p.Direct++
			case Relay:
				p.Relay++
			default:
				p.Failed++
			}
			if t.Outcome != None && t.FirstByte > 0 {
				fb = append(fb, ms(t.FirstByte))
			}
			if t.Outcome == Direct && t.ToDirect > 0 {
				dir = append(dir, ms(t.ToDirect))
			}
		}
		p.FirstByteMsP50 = median(fb)
		p.DirectMsP50 = median(dir)
		r.Pairs = append(r.Pairs, p)
	}
	return r
}

// Failures lists the pairs that fell below their expected outcome.
func (r Report) Failures() []string {
	var out []string
	for _, p := range r.Pairs {
		if !p.Met() {
			out = append(out, fmt.Sprintf("%s -> %s: expected %s, got %d direct, %d relay, %d failed of %d", p.A, p.B, p.Expected, p.Direct, p.Relay, p.Failed, p.Trials))
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) *float64 {
	if len(v) == 0 {
		return nil
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &m
}
