package main

import (
	"context"
	"errors"
)

// runThroughput is a placeholder until the command lands.
func runThroughput(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
