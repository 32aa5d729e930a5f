package turnrelay

import (
	"fmt"
	"strings"
	"time"
)

// Limits of the REST-API username "<unix-expiry>:<user>".
const (
	// MaxUsernameLen is the STUN USERNAME limit (RFC 8489 section 14.3).
	MaxUsernameLen = 513
	// maxExpiryDigits bounds the decimal expiry so that it fits an int64.
	maxExpiryDigits = 18
)

// ParseUsername splits a REST-API username "<unix-expiry>:<user>" into the
// expiry time and the user. The expiry is decimal seconds since the Unix
// epoch; the user is everything after the first ':' and must not be empty.
// It is a pure function over the username sent by the client.
func ParseUsername(username string) (expiry time.Time, user string, err error) {
	if len(username) > MaxUsernameLen {
		return time.Time{}, "", fmt.Errorf("%w: %d bytes, at most %d", ErrUsername, len(username), MaxUsernameLen)
	}
	ts, user, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", fmt.Errorf("%w: no ':'", ErrUsername)
	}
	if ts == "" || len(ts) > maxExpiryDigits {
		return time.Time{}, "", fmt.Errorf("%w: expiry must be 1 to %d digits", ErrUsername, maxExpiryDigits)
	}
	var secs int64
	for i := 0; i < len(ts); i++ {
		c := ts[i]
		if c < '0' || c > '9' {
			return time.Time{}, "", fmt.Errorf("%w: expiry %q is not decimal digits", ErrUsername, ts)
		}
		secs = secs*10 + int64(c-'0')
	}
	if user == "" {
		return time.Time{}, "", fmt.Errorf("%w: empty user", ErrUsername)
	}
	return time.Unix(secs, 0), user, nil
}
