package attack

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Rate
	}{
		{"100Mbit", Rate{Bits: 100e6}},
		{"100mbps", Rate{Bits: 100e6}},
		{"500kbit/s", Rate{Bits: 500e3}},
		{"2G", Rate{Bits: 2e9}},
		{"1e8", Rate{Bits: 1e8}},
		{"50kpps", Rate{Packets: 50e3}},
		{"20000pps", Rate{Packets: 20000}},
		{"3kpkt/s", Rate{Packets: 3000}},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "fast", "-5Mbit", "0pps", "Mbit", "NaN"} {
		if r, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %+v, want an error", bad, r)
		}
	}
	if got := (Rate{Bits: 80e6}).pps(100); got != 100000 {
		t.Errorf("80 Mbit/s of 100-byte datagrams = %v pkt/s, want 100000", got)
	}
	if got := (Rate{Packets: 7}).pps(100); got != 7 {
		t.Errorf("a packet rate does not depend on size: got %v", got)
	}
}

func TestPacket(t *testing.T) {
	src := netip.MustParseAddrPort("100.96.1.2:1234")
	dst := netip.MustParseAddrPort("203.0.113.10:3478")
	payload := []byte("hello")
	p := packet(make([]byte, 100), src, dst, payload)
	if len(p) != udpHeaderLen+len(payload) {
		t.Fatalf("length %d", len(p))
	}
	if p[0] != 0x45 || p[9] != 17 || binary.BigEndian.Uint16(p[2:]) != uint16(len(p)) {
		t.Errorf("bad IPv4 header % x", p[:20])
	}
	if !bytes.Equal(p[12:16], []byte{100, 96, 1, 2}) || !bytes.Equal(p[16:20], []byte{203, 0, 113, 10}) {
		t.Errorf("addresses % x", p[12:20])
	}
	if binary.BigEndian.Uint16(p[20:]) != 1234 || binary.BigEndian.Uint16(p[22:]) != 3478 ||
		binary.BigEndian.Uint16(p[24:]) != uint16(8+len(payload)) {
		t.Errorf("bad UDP header % x", p[20:28])
	}
	if string(p[28:]) != "hello" {
		t.Errorf("payload %q", p[28:])
	}
}

func TestRandomSourceStaysInTheSpoofedRange(t *testing.T) {
	r := newTestRand()
	for range 10000 {
		s := randomSource(r)
		if !spoofNet.Contains(s.Addr()) || s.Port() < 1024 {
			t.Fatalf("source %s outside %s", s, spoofNet)
		}
	}
	if !spoofNet.Contains(victim.Addr()) {
		t.Fatalf("victim %s outside %s", victim, spoofNet)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 of 1..100 ms = %v", p)
	}
	if p := percentile(d, 0.5); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(nil, 0.99); p != 0 {
		t.Errorf("p99 of nothing = %v", p)
	}
}

// healthy is a result that holds every default threshold.
func healthy(check Check) Result {
	ops := map[Op]OpResult{}
	for _, op := range Ops {
		ops[op] = OpResult{Attempts: 100, OK: 100, P50: time.Millisecond, P99: 20 * time.Millisecond}
	}
	victims := map[Op]OpResult{}
	for _, op := range VictimOps {
		victims[op] = OpResult{Attempts: 100, OK: 100, P50: time.Millisecond, P99: 20 * time.Millisecond}
	}
	return Result{Attack: "x", Check: check, Ops: ops, Victims: victims, InBytes: 1000, OutBytes: 500, Amplification: 0.5,
		AnswerRatio: 0.5, OutPPS: 50, RendezvousRSS: 20 << 20, RelayRSS: 20 << 20}
}

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		name  string
		check Check
		mod   func(*Result)
		want  string // "" = pass
	}{
		{"healthy", CheckAmplification, func(*Result) {}, ""},
		{"one lost bind in a hundred is allowed", CheckNone, func(r *Result) { r.Ops[OpBind] = OpResult{Attempts: 100, OK: 99, P99: time.Millisecond} }, ""},
		{"lost registrations", CheckNone, func(r *Result) { r.Ops[OpRegister] = OpResult{Attempts: 100, OK: 98, P99: time.Millisecond} }, "register success"},
		{"slow connects", CheckNone, func(r *Result) { r.Ops[OpConnect] = OpResult{Attempts: 10, OK: 10, P99: time.Second} }, "connect p99"},
		{"no binds tried", CheckNone, func(r *Result) { delete(r.Ops, OpBind) }, "no legitimate bind"},
		{"relay losses are reported, not judged", CheckNone, func(r *Result) { r.Ops[OpRelay] = OpResult{Attempts: 10} }, ""},
		{"amplification", CheckAmplification, func(r *Result) { r.Amplification = 1.2 }, "amplification 1.20x"},
		{"large answers under a dropping server", CheckAmplification, func(r *Result) { r.AnswerRatio = 3.6 }, "answers 3.60x"},
		{"large STUN answers are allowed", CheckReflectRate, func(r *Result) { r.Amplification, r.AnswerRatio = 1.6, 1.6 }, ""},
		{"STUN answers without a limit", CheckReflectRate, func(r *Result) { r.OutPPS = 20000 }, "not rate-limited"},
		{"large TURN challenges within their limit are allowed", CheckChallengeRate, func(r *Result) { r.AnswerRatio = 2.4 }, ""},
		{"TURN challenges without a limit", CheckChallengeRate, func(r *Result) { r.OutPPS = 20000 }, "not rate-limited"},
		{"TURN challenges outweighing the flood", CheckChallengeRate, func(r *Result) { r.Amplification = 1.5 }, "amplification 1.50x"},
		{"victims of a peer's probes", CheckVictimAmplification, func(r *Result) { r.VictimAmplification = 40 }, "victims got 40.00x"},
		{"victims of Punches are reported, not judged", CheckVictim, func(r *Result) { r.VictimAmplification = 4 }, ""},
		{"spoofed peers served", CheckSpoofedPeer, func(*Result) {}, ""},
		{"spoofed peers' connects dropped", CheckSpoofedPeer, func(r *Result) { r.Victims[OpVictimConnect] = OpResult{Attempts: 100, OK: 76, P99: time.Millisecond} }, "spoofed-connect success 76.0%"},
		{"spoofed peers' keepalives late", CheckSpoofedPeer, func(r *Result) {
			r.Victims[OpVictimKeepalive] = OpResult{Attempts: 10, OK: 10, P99: 1728 * time.Millisecond}
		}, "spoofed-keepalive p99 1.728s"},
		{"spoofed peers' keepalives not measured", CheckSpoofedPeer, func(r *Result) { delete(r.Victims, OpVictimKeepalive) }, "no spoofed-keepalive"},
		{"the spoofed relay sender's datagrams lost", CheckSpoofedPeer, func(r *Result) { r.Ops[OpRelay] = OpResult{Attempts: 10, OK: 5} }, "relay success 50.0%"},
		{"TURN authentication flood", CheckTURNAuth, func(*Result) {}, ""},
		{"TURN allocations lost under an authentication flood", CheckTURNAuth, func(r *Result) { r.Ops[OpTURN] = OpResult{Attempts: 100, OK: 90} }, "turn success 90.0%"},
		{"TURN authentication answers outweighing the flood", CheckTURNAuth, func(r *Result) { r.Amplification = 1.3 }, "amplification 1.30x"},
		{"holding attacks are not judged by bytes", CheckNone, func(r *Result) { r.Amplification = 5 }, ""},
		{"memory", CheckNone, func(r *Result) { r.RelayRSS = 600 << 20 }, "relay RSS 600 MiB"},
		{"growth", CheckNone, func(r *Result) { r.RendezvousGrowth = 100 << 20 }, "rendezvous RSS grew"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := healthy(c.check)
			c.mod(&r)
			judge(&r, DefaultThresholds)
			got := strings.Join(r.Failures, "; ")
			if c.want == "" && !r.Pass() || c.want != "" && !strings.Contains(got, c.want) {
				t.Errorf("failures %q, want %q", got, c.want)
			}
		})
	}
	r := Result{Attack: "x", Err: "servers did not start"}
	judge(&r, DefaultThresholds)
	if r.Pass() {
		t.Error("an attack that could not be measured passed")
	}
}

func TestSelect(t *testing.T) {
	all, err := Select(nil)
	if err != nil || len(all) != len(Attacks()) {
		t.Fatalf("Select(nil) = %d, %v", len(all), err)
	}
	got, err := Select([]string{"stream-exhaust", "x25519"})
	if err != nil || len(got) != 2 || got[0].Name != "x25519" {
		t.Fatalf("Select keeps suite order: %v, %v", got, err)
	}
	if _, err := Select([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "replay-fill") {
		t.Fatalf("unknown attack: %v", err)
	}
}

func TestMarkdown(t *testing.T) {
	ok := healthy(CheckReflectRate)
	ok.Attack = "stun-reflect"
	bad := healthy(CheckAmplification)
	bad.Attack = "turn-allocate-unauth"
	bad.AnswerRatio = 3.6
	judge(&ok, DefaultThresholds)
	judge(&bad, DefaultThresholds)
	rep := &Report{Rate: "100.0 Mbit/s", Duration: 3 * time.Second, LegitRate: 20, CPUs: 2,
		Thresholds: DefaultThresholds, Results: []Result{ok, bad, {Attack: "x25519", Err: "boom\nline"}}}
	var b bytes.Buffer
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"| stun-reflect |", "| pass |", "| turn-allocate-unauth |", "**FAIL**", "answers 3.60x", "error: boom line"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	if err := rep.WriteAll(dir); err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(dir + "/attack.json")
	if err != nil || !bytes.Contains(j, []byte(`"answer_ratio": 3.6`)) {
		t.Errorf("attack.json: %v\n%s", err, j)
	}
}

// needRoot skips without root, except under CI, where it fails: the lab's
// namespaces are the test.
func needRoot(t *testing.T) {
	t.Helper()
	ci.NeedRoot(t, "the attack lab makes network namespaces")
}

// build compiles the servers once per test binary.
func build(t *testing.T, ctx context.Context) Binaries {
	t.Helper()
	b, err := bintest.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return Binaries{Rendezvous: b.Rendezvous, Relay: b.Relay, Peer: b.Peer}
}

// runSuite runs cfg with a lab that t.Cleanup removes even if Run does not
// get to.
func runSuite(t *testing.T, ctx context.Context, cfg Config) *Report {
	t.Helper()
	cfg.Prefix = "atkt" + strings.ToLower(randomTag())
	t.Cleanup(func() {
		if err := Sweep(cfg.Prefix); err != nil {
			t.Errorf("sweep: %v", err)
		}
		assertNoNetns(t, cfg.Prefix)
	})
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		t.Logf("%s: %+v", r.Attack, r)
	}
	return rep
}

func assertNoNetns(t *testing.T, prefix string) {
	ents, _ := os.ReadDir(netnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// TestSuiteDetectsAnUndefendedTarget shows that the measurement can fail:
// the same STUN reflection flood against the rendezvous is within the
// threshold with its per-source rate limit, and breaks it when the
// operator turns the limits off (--rate-limit -1 --stun-rate -1): the suite tells a
// defended server from an undefended one.
func TestSuiteDetectsAnUndefendedTarget(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bins := build(t, ctx)
	cfg := Config{Bins: bins, Attacks: []string{"stun-reflect"}, Rate: Rate{Packets: 20000},
		Duration: 2 * time.Second, LegitRate: 10, Peers: 4}
	reflect := func(r Result) bool {
		for _, f := range r.Failures {
			if strings.Contains(f, "not rate-limited") {
				return true
			}
		}
		return false
	}

	defended := runSuite(t, ctx, cfg).Results[0]
	if defended.Err != "" || reflect(defended) {
		t.Fatalf("with its rate limit the rendezvous failed the reflection check: %v %v", defended.Err, defended.Failures)
	}
	if defended.SentPackets == 0 || defended.OutPPS <= 0 {
		t.Fatalf("the flood was not measured: sent %d, answers %v/s", defended.SentPackets, defended.OutPPS)
	}

	cfg.RendezvousArgs = []string{"--rate-limit=-1", "--stun-rate=-1"}
	open := runSuite(t, ctx, cfg).Results[0]
	if open.Err != "" {
		t.Fatal(open.Err)
	}
	if !reflect(open) || open.Pass() {
		t.Fatalf("an unlimited STUN responder passed: %.0f answers/s, failures %v", open.OutPPS, open.Failures)
	}
	if open.OutPPS <= 10*defended.OutPPS {
		t.Errorf("answers/s undefended %.0f, defended %.0f: the limit should make a tenfold difference", open.OutPPS, defended.OutPPS)
	}
}

// TestDefencesHold is the suite's short form for CI: every attack for
// 2.5 seconds at 50 Mbit/s, and each must hold the thresholds. It
// fails while a defence is missing. The rate is half the 100 Mbit/s
// because on the two-core CI machine the flood generator, the lab's
// namespace routing and the servers share both cores: at 100 Mbit/s the
// machine itself saturates and legitimate p99 passes 1 s (every operation
// still succeeds; the README's table from `loadtest attack` shows both
// rates). ATTACK_ONLY=name,name runs a subset, ATTACK_RATE=100Mbit another
// rate. Attacks whose finding is still open (Attack.Open) run only when
// ATTACK_ONLY names them.
func TestDefencesHold(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bins := build(t, ctx)
	cfg := Config{Bins: bins, Rate: Rate{Bits: 50e6}}
	cfg.Short()
	if only := os.Getenv("ATTACK_ONLY"); only != "" {
		cfg.Attacks = strings.Split(only, ",")
	} else {
		for _, a := range Attacks() {
			if a.Open != "" {
				t.Logf("left out: %s, an open finding: %s", a.Name, a.Open)
				continue
			}
			cfg.Attacks = append(cfg.Attacks, a.Name)
		}
	}
	if rate := os.Getenv("ATTACK_RATE"); rate != "" {
		r, err := ParseRate(rate)
		if err != nil {
			t.Fatalf("ATTACK_RATE: %v", err)
		}
		cfg.Rate = r
	}
	rep := runSuite(t, ctx, cfg)
	var md bytes.Buffer
	_ = rep.Markdown(&md)
	t.Logf("\n%s", md.String())
	for _, r := range rep.Results {
		t.Run(r.Attack, func(t *testing.T) {
			if r.Err != "" {
				t.Fatalf("not measured: %s", r.Err)
			}
			for _, f := range r.Failures {
				t.Error(f)
			}
		})
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

func randomTag() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 4)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

func TestRefusalCounters(t *testing.T) {
	before := parseCounters(strings.NewReader(`# HELP keymesh_rendezvous_rejected_total x
# TYPE keymesh_rendezvous_rejected_total counter
keymesh_rendezvous_rejected_total{reason="bad_box"} 5
keymesh_rendezvous_rejected_total{reason="replay"} 0
keymesh_rendezvous_registrations_total 100
`))
	after := parseCounters(strings.NewReader(`keymesh_rendezvous_rejected_total{reason="bad_box"} 25
keymesh_rendezvous_rejected_total{reason="replay"} 1e+06
keymesh_rendezvous_registrations_total 200
keymesh_relay_dropped_packets_total{reason="rate_limited"} 3
`))
	got := strings.Join(delta(before, after), "; ")
	want := `keymesh_rendezvous_rejected_total{reason="replay"} +1000000; keymesh_rendezvous_rejected_total{reason="bad_box"} +20; keymesh_relay_dropped_packets_total{reason="rate_limited"} +3`
	if got != want {
		t.Errorf("delta:\n got %s\nwant %s", got, want)
	}
}

func TestJudgeInternal(t *testing.T) {
	r := healthy(CheckInternal)
	r.Internal = map[string]int64{"loopback": 0, "private": 0, "metadata": 0, "own-address": 0}
	judge(&r, DefaultThresholds)
	if !r.Pass() {
		t.Fatalf("nothing reached, yet %v", r.Failures)
	}
	r = healthy(CheckInternal)
	r.Internal = map[string]int64{"metadata": 3}
	judge(&r, DefaultThresholds)
	if r.Pass() || !strings.Contains(strings.Join(r.Failures, ";"), "3 datagrams to the metadata") {
		t.Fatalf("a relay that reached the metadata service passed: %v", r.Failures)
	}
}
