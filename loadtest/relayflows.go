package main

import (
	"context"
	"errors"
)

// runRelayFlows is a placeholder until the command lands.
func runRelayFlows(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
