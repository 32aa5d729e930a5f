package policy

import "errors"

// ErrBadRule is a rule that does not parse.
var ErrBadRule = errors.New("bad allow rule")
