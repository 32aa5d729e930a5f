package flagenv

import (
	"flag"
	"io"
	"testing"
)

func TestEnvFillsUnsetFlags(t *testing.T) {
	env := map[string]string{
		"KEYMESH_TICKET_KEY_FILE": "/etc/k",
		"KEYMESH_LISTEN":          ":1",
		"KEYMESH_RELAY":           "a:1, b:2",
		"KEYMESH_DEV":             "",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	key := fs.String("ticket-key-file", "", "")
	listen := fs.String("listen", ":3478", "")
	dev := fs.Bool("dev", false, "")
	var relays Strings
	fs.Var(&relays, "relay", "")
	if err := ParseEnv(fs, []string{"--listen", ":2"}, lookup); err != nil {
		t.Fatal(err)
	}
	if *key != "/etc/k" || *listen != ":2" || *dev || len(relays) != 2 || relays[1] != "b:2" {
		t.Fatalf("key=%q listen=%q dev=%v relays=%v", *key, *listen, *dev, relays)
	}
	env["KEYMESH_DEV"] = "maybe"
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Bool("dev", false, "")
	if err := ParseEnv(fs2, nil, lookup); err == nil {
		t.Fatal("bad boolean in the environment accepted")
	}
	if EnvName("turn-secret-file") != "KEYMESH_TURN_SECRET_FILE" {
		t.Fatal(EnvName("turn-secret-file"))
	}
}
