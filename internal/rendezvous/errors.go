package rendezvous

import "errors"

// Errors returned by New and Run.
var (
	// ErrConfig marks an invalid Config or Options.
	ErrConfig = errors.New("invalid rendezvous configuration")
)

// errKeyBudget: the global key-miss budget is spent for now.
var errKeyBudget = errors.New("key-miss budget spent")
