package turnrelay

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API convention specifies.
	"encoding/base64"
	"fmt"
	"strconv"
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

// Credentials returns time-limited TURN credentials for user in the "TURN
// REST API" convention (draft-uberti-behave-turn-rest, as coturn's
// use-auth-secret and browsers' iceServers expect): the username is
// "<unix-expiry>:<user>" with expiry = now + ttl, and the password is
// base64(HMAC-SHA1(secret, username)). Any server holding secret can check
// them without state.
func Credentials(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + user
	return username, restPassword(secret, username)
}

// restPassword is base64(HMAC-SHA1(secret, username)).
func restPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

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
