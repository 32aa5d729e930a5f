// Package obs is what every keymesh server shares for being run in
// production: the logger (log/slog, text or JSON), the admin HTTP server with
// /healthz, /readyz and Prometheus /metrics, and the build version.
package obs

import (
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
)

// version is set at build time with
// -ldflags "-X github.com/keymesh/keymesh/internal/obs.version=v1.2.3".
var version = ""

// Version returns the build's version: the one set at link time, else the
// module version or VCS revision Go recorded, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

// NewLogger returns a slog logger writing to w in format "text" or "json"
// at level "debug", "info", "warn" or "error".
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "", "info":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// Discard is a logger that drops everything, the default where none is set.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
