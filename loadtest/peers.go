package main

import (
	"context"
	"errors"
)

// runPeers is a placeholder until the command lands.
func runPeers(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
