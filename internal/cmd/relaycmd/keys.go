package relaycmd

import (
	"fmt"
	"log/slog"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// keyHelp says how to make a ticket key file.
const keyHelp = "create one with `relay --gen-ticket-key > /etc/keymesh/ticket.keys && chmod 600 /etc/keymesh/ticket.keys` " +
	"and pass --ticket-key-file /etc/keymesh/ticket.keys (every instance behind one address needs the same file), " +
	"or run with --dev for a throwaway in-memory key"

// loadKeys reads the ticket keys from the key file, or makes a random one
// with --dev. Secrets never come from the binary.
func loadKeys(o TicketOptions, log *slog.Logger) (*crypto.TicketKeys, error) {
	if o.KeyFile != "" {
		k, err := crypto.LoadTicketKeyFile(o.KeyFile, nil)
		if err != nil {
			return nil, usage.Errorf("%v", err)
		}
		return k, nil
	}
	if !o.Dev {
		return nil, usage.Errorf("no ticket key: %s", keyHelp)
	}
	k, err := crypto.ParseTicketKeys([]byte(crypto.NewTicketKeyLine(1)), nil)
	if err != nil {
		return nil, fmt.Errorf("dev ticket key: %w", err)
	}
	log.Warn("dev mode: random in-memory ticket key; tickets die with this process and no other instance can open them")
	return k, nil
}
