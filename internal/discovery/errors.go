package discovery

import "errors"

// ErrNotFound and ErrUnavailable are declared with the Registry interface in
// discovery.go; the errors below belong to the implementations.

// ErrInvalid is returned by Put for a record or TTL the registry refuses: a
// zero peer ID, a TTL that is not positive, or a record whose encoding
// exceeds MaxRecordSize.
var ErrInvalid = errors.New("invalid registration")

// ErrBadRecord is returned when stored bytes do not decode as a record (a
// corrupt value, or one written by a newer, incompatible version).
var ErrBadRecord = errors.New("malformed stored record")

// ErrNotNewer is returned by Put for a record whose Sent is not later than
// the Sent of the live record it would replace: a Register replayed (equal
// time) or overtaken by a newer one. Nothing was stored.
var ErrNotNewer = errors.New("registration not newer than the stored one")
