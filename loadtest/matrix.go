package main

import (
	"context"
	"errors"
)

// runMatrix is a placeholder until the command lands.
func runMatrix(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
