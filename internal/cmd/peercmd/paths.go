package peercmd

import (
	"os"
	"path/filepath"

	"github.com/keymesh/keymesh/internal/daemon"
)

// defaultKeyPath is $XDG_CONFIG_HOME/keymesh/peer.key, else
// ~/.config/keymesh/peer.key, else ./peer.key when there is no home.
func defaultKeyPath(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "keymesh", "peer.key")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "keymesh", "peer.key")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "keymesh", "peer.key")
	}
	return "peer.key"
}

func defaultSocketPath(getenv func(string) string) string {
	return daemon.DefaultSocketPath(getenv, os.Getuid())
}
