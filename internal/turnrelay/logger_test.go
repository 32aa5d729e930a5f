package turnrelay

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestPionLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := pionLogs{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}.NewLogger("turn")
	l.Tracef("trace %d", 1)
	l.Debugf("per-packet %d", 2)
	l.Infof("no permission %d", 3)
	l.Warnf("warn %d", 4)
	l.Error("error 5")
	out := buf.String()
	for _, hidden := range []string{"trace 1", "per-packet 2"} {
		if strings.Contains(out, hidden) {
			t.Errorf("%q logged at Debug level: %s", hidden, out)
		}
	}
	for _, shown := range []string{"level=DEBUG msg=\"no permission 3\"", "level=WARN msg=\"warn 4\"", "level=ERROR msg=\"error 5\"", "scope=pion/turn"} {
		if !strings.Contains(out, shown) {
			t.Errorf("missing %q in %s", shown, out)
		}
	}
}
