package peercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/keymesh/keymesh/internal/crypto"
)

var cmdKeygen = &command{
	name:    "keygen",
	summary: "make a new identity (key file)",
	help: `Makes a new Ed25519 identity and writes it to the key file (PKCS #8 PEM,
mode 0600). It refuses to overwrite an existing file. Prints the new peer ID
and overlay address, like "peer id".`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		key := fs.String("key", defaultKeyPath(c.getenv), "key file `path`")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if _, err := os.Lstat(*key); err == nil {
				return fmt.Errorf("%s already exists; refusing to overwrite it (pick another --key, or delete the file if you mean to lose that identity)", *key)
			}
			id, err := crypto.GenerateIdentity(nil)
			if err != nil {
				return err
			}
			if err := crypto.WriteKeyFile(*key, id); err != nil {
				if errors.Is(err, os.ErrExist) {
					return fmt.Errorf("%s already exists; refusing to overwrite it", *key)
				}
				return err
			}
			fmt.Fprintf(c.stderr, "wrote new key file %s (mode 0600)\n", *key)
			return printID(c.stdout, id.ID(), false)
		}
	},
}

var cmdID = &command{
	name:    "id",
	summary: "print this peer's ID and overlay address",
	help: `Prints the peer ID (the public key, 52 base32 characters: what other peers
use to reach this one) on the first line and the overlay IPv6 address on the
second. With --json: {"id": "...", "overlay": "..."}.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		key := fs.String("key", defaultKeyPath(c.getenv), "key file `path`")
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			id, err := crypto.LoadKeyFile(*key)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no key file at %s (make one with `peer keygen --key %s`)", *key, *key)
				}
				return err
			}
			return printID(c.stdout, id.ID(), *asJSON)
		}
	},
}

func printID(w io.Writer, id crypto.PeerID, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]string{"id": id.String(), "overlay": id.OverlayAddr().String()})
	}
	_, err := fmt.Fprintf(w, "%s\n%s\n", id, id.OverlayAddr())
	return err
}
