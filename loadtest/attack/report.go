package attack

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Markdown writes the report as two tables: what each attack achieved and
// cost the servers, and how the legitimate operations fared.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Attacks at %s for %s each, %.0f legitimate operations of each kind per second, %d CPUs.\n\n",
		r.Rate, r.Duration, r.LegitRate, r.CPUs)
	b.WriteString("| attack | achieved | held | attacker in | server out | amplification | rendezvous CPU / RSS | relay CPU / RSS / fds | verdict |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, res := range r.Results {
		if res.Err != "" {
			fmt.Fprintf(&b, "| %s | | | | | | | | error: %s |\n", res.Attack, oneLine(res.Err))
			continue
		}
		achieved := "-"
		if res.AchievedPPS > 0 && res.Attack != "none" {
			achieved = fmt.Sprintf("%s/s, %s pkt/s", bitsText(res.AchievedBits), count(res.AchievedPPS))
		}
		held := "-"
		if res.Held > 0 || res.Check == CheckNone && res.Attack != "none" {
			held = fmt.Sprint(res.Held)
		}
		ampl := "-"
		if res.Check == CheckInternal {
			var got []string
			for _, name := range []string{"loopback", "private", "metadata", "own-address"} {
				got = append(got, fmt.Sprintf("%s %d", name, res.Internal[name]))
			}
			ampl = "reached: " + strings.Join(got, ", ")
		}
		if res.Check == CheckVictim || res.Check == CheckVictimAmplification {
			ampl = fmt.Sprintf("victim got %s: %.2fx", bytesText(res.VictimBytes), res.VictimAmplification)
		}
		if (res.Check == CheckAmplification || res.Check == CheckTURNAuth || res.Check == CheckReflectRate || res.Check == CheckChallengeRate) && res.InBytes > 0 {
			ampl = fmt.Sprintf("%.2fx", res.Amplification)
			if res.AnswerRatio > 0 {
				ampl += fmt.Sprintf(", answer %.2fx", res.AnswerRatio)
			}
			if res.Check == CheckReflectRate || res.Check == CheckChallengeRate {
				ampl += fmt.Sprintf(", %s/s", count(res.OutPPS))
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.0f%% / %s | %.0f%% / %s / %d | %s |\n",
			res.Attack, achieved, held, bytesText(res.InBytes), bytesText(res.OutBytes), ampl,
			100*res.RendezvousCPU, mib(res.RendezvousRSS), 100*res.RelayCPU, mib(res.RelayRSS), res.RelayFDs,
			verdict(res))
	}
	b.WriteString("\nLegitimate operations during each attack: success (of attempts), p50 / p99.\n\n")
	b.WriteString("| attack |")
	for _, op := range Ops {
		fmt.Fprintf(&b, " %s |", op)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --- |", len(Ops)) + "\n")
	for _, res := range r.Results {
		if res.Err != "" {
			continue
		}
		fmt.Fprintf(&b, "| %s |", res.Attack)
		for _, op := range Ops {
			o := res.Ops[op]
			fmt.Fprintf(&b, " %.1f%% (%d) %s / %s |", 100*o.SuccessRate(), o.Attempts, ms(o.P50), ms(o.P99))
		}
		b.WriteString("\n")
	}
	spoofed := false
	for _, res := range r.Results {
		if res.Err != "" || res.Check != CheckSpoofedPeer {
			continue
		}
		if !spoofed {
			b.WriteString("\nThe spoofed peers' own operations during each flood forged from their addresses: success (of attempts), p50 / p99.\n\n")
			spoofed = true
		}
		var got []string
		for _, op := range VictimOps {
			o := res.Victims[op]
			got = append(got, fmt.Sprintf("%s %.1f%% (%d) %s / %s", op, 100*o.SuccessRate(), o.Attempts, ms(o.P50), ms(o.P99)))
		}
		fmt.Fprintf(&b, "- %s: %s\n", res.Attack, strings.Join(got, ", "))
	}
	refused := false
	for _, res := range r.Results {
		if res.KernelDrops > 0 {
			res.Refusals = append([]string{fmt.Sprintf("kernel: full receive buffers +%d", res.KernelDrops)}, res.Refusals...)
		}
		if len(res.Refusals) == 0 {
			continue
		}
		if !refused {
			b.WriteString("\nWhat the servers refused during each attack (their /metrics; the kernel's drops at full server sockets first):\n\n")
			refused = true
		}
		top := res.Refusals[:min(4, len(res.Refusals))]
		fmt.Fprintf(&b, "- %s: %s\n", res.Attack, strings.Join(top, ", "))
	}
	if f := r.Failed(); len(f) > 0 {
		b.WriteString("\nBroken thresholds:\n\n")
		for _, s := range f {
			fmt.Fprintf(&b, "- %s\n", oneLine(s))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func verdict(r Result) string {
	if r.Pass() {
		return "pass"
	}
	return "**FAIL**"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func bytesText(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// WriteAll writes attack.md and attack.json into dir.
func (r *Report) WriteAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "attack.md"))
	if err != nil {
		return err
	}
	if err := r.Markdown(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "attack.json"), append(j, '\n'), 0o644)
}
