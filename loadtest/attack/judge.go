package attack

import (
	"fmt"
	"slices"
	"time"
)

// Thresholds are what a defended server must hold under every attack.
type Thresholds struct {
	// MinSuccess is the least share of legitimate registrations, connects
	// and binds that must succeed.
	MinSuccess float64 `json:"min_success"`
	// MaxP99 bounds their 99th-percentile latency.
	MaxP99 time.Duration `json:"max_p99_ns"`
	// MaxAmplification bounds server bytes out over attacker bytes in
	// (UDP payload) for attacks judged by CheckAmplification.
	MaxAmplification float64 `json:"max_amplification"`
	// MaxReflectPPS bounds the answers per second one spoofed victim gets
	// from a STUN Binding flood (CheckReflectRate).
	MaxReflectPPS float64 `json:"max_reflect_pps"`
	// MaxPeerReflection bounds what the victims of a peer's hole-punching
	// probes receive over what the attacker sent (CheckVictimAmplification).
	// The attacker there is registered and proved its own address; the
	// victims are candidates it named, which a punch must probe before
	// anyone can prove them. QUIC allows an unvalidated address three
	// times what it sent (RFC 9000, section 8.1); the same bound holds here.
	MaxPeerReflection float64 `json:"max_peer_reflection"`
	// MaxRSS bounds each server's resident memory, in bytes; MaxGrowth
	// how much it may grow during one attack.
	MaxRSS    int64 `json:"max_rss_bytes"`
	MaxGrowth int64 `json:"max_growth_bytes"`
}

// DefaultThresholds are the issue's: 99 %, 1 s, no amplification.
var DefaultThresholds = Thresholds{
	MinSuccess:        0.99,
	MaxP99:            time.Second,
	MaxAmplification:  1,
	MaxReflectPPS:     1000,
	MaxPeerReflection: 3,
	MaxRSS:            512 << 20,
	MaxGrowth:         64 << 20,
}

// judge fills res.Failures from the thresholds.
func judge(res *Result, th Thresholds) {
	if res.Err != "" {
		return
	}
	for _, op := range []Op{OpRegister, OpConnect, OpBind} {
		r := res.Ops[op]
		if r.Attempts == 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("no legitimate %s was attempted", op))
			continue
		}
		if s := r.SuccessRate(); s < th.MinSuccess {
			res.Failures = append(res.Failures, fmt.Sprintf("legitimate %s success %.1f%% < %.1f%% (%d of %d)",
				op, 100*s, 100*th.MinSuccess, r.OK, r.Attempts))
		}
		if r.OK > 0 && r.P99 >= th.MaxP99 {
			res.Failures = append(res.Failures, fmt.Sprintf("legitimate %s p99 %s >= %s", op, r.P99.Round(time.Millisecond), th.MaxP99))
		}
	}
	if res.Check == CheckTURNAuth {
		if r := res.Ops[OpTURN]; r.Attempts == 0 {
			res.Failures = append(res.Failures, "no legitimate turn was attempted")
		} else if s := r.SuccessRate(); s < th.MinSuccess {
			res.Failures = append(res.Failures, fmt.Sprintf("legitimate turn success %.1f%% < %.1f%% (%d of %d)",
				100*s, 100*th.MinSuccess, r.OK, r.Attempts))
		}
	}
	switch res.Check {
	case CheckAmplification, CheckTURNAuth:
		if res.Amplification > th.MaxAmplification {
			res.Failures = append(res.Failures, fmt.Sprintf("amplification %.2fx > %.2fx", res.Amplification, th.MaxAmplification))
		}
		if res.AnswerRatio > th.MaxAmplification {
			res.Failures = append(res.Failures, fmt.Sprintf("answers %.2fx the size of the spoofed requests > %.2fx", res.AnswerRatio, th.MaxAmplification))
		}
	case CheckInternal:
		for _, name := range []string{"loopback", "private", "metadata", "own-address"} {
			if n := res.Internal[name]; n > 0 {
				res.Failures = append(res.Failures, fmt.Sprintf("relayed %d datagrams to the %s destination", n, name))
			}
		}
	case CheckVictimAmplification:
		if res.VictimAmplification > th.MaxPeerReflection {
			res.Failures = append(res.Failures, fmt.Sprintf("victims got %.2fx the bytes the attacker sent > %.2fx", res.VictimAmplification, th.MaxPeerReflection))
		}
	case CheckReplay:
		if res.Held > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("%d replayed requests answered", res.Held))
		}
	case CheckChallengeRate:
		if res.Amplification > th.MaxAmplification {
			res.Failures = append(res.Failures, fmt.Sprintf("amplification %.2fx > %.2fx", res.Amplification, th.MaxAmplification))
		}
		if res.OutPPS > th.MaxReflectPPS {
			res.Failures = append(res.Failures, fmt.Sprintf("%.0f challenges/s to one spoofed source > %.0f (not rate-limited)", res.OutPPS, th.MaxReflectPPS))
		}
	case CheckSpoofedPeer:
		for _, op := range append(slices.Clone(VictimOps), OpRelay) {
			r, ok := res.Victims[op]
			if op == OpRelay {
				r, ok = res.Ops[op]
			}
			switch {
			case !ok || r.Attempts == 0:
				res.Failures = append(res.Failures, fmt.Sprintf("no %s was attempted", op))
			case r.SuccessRate() < th.MinSuccess:
				res.Failures = append(res.Failures, fmt.Sprintf("%s success %.1f%% < %.1f%% (%d of %d): the flood forged from their addresses silenced them",
					op, 100*r.SuccessRate(), 100*th.MinSuccess, r.OK, r.Attempts))
			case op != OpRelay && r.OK > 0 && r.P99 >= th.MaxP99:
				res.Failures = append(res.Failures, fmt.Sprintf("%s p99 %s >= %s", op, r.P99.Round(time.Millisecond), th.MaxP99))
			}
		}
	case CheckReflectRate:
		if res.OutPPS > th.MaxReflectPPS {
			res.Failures = append(res.Failures, fmt.Sprintf("%.0f answers/s to one spoofed source > %.0f (not rate-limited)", res.OutPPS, th.MaxReflectPPS))
		}
	}
	if th.MaxRSS > 0 {
		if res.RendezvousRSS > th.MaxRSS {
			res.Failures = append(res.Failures, fmt.Sprintf("rendezvous RSS %s > %s", mib(res.RendezvousRSS), mib(th.MaxRSS)))
		}
		if res.RelayRSS > th.MaxRSS {
			res.Failures = append(res.Failures, fmt.Sprintf("relay RSS %s > %s", mib(res.RelayRSS), mib(th.MaxRSS)))
		}
	}
	if th.MaxGrowth > 0 {
		if res.RendezvousGrowth > th.MaxGrowth {
			res.Failures = append(res.Failures, fmt.Sprintf("rendezvous RSS grew %s > %s", mib(res.RendezvousGrowth), mib(th.MaxGrowth)))
		}
		if res.RelayGrowth > th.MaxGrowth {
			res.Failures = append(res.Failures, fmt.Sprintf("relay RSS grew %s > %s", mib(res.RelayGrowth), mib(th.MaxGrowth)))
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
