package main

import (
	"context"
	"errors"
)

// runRelay is a placeholder until the command lands.
func runRelay(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
