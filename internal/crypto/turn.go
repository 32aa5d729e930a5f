package crypto

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API convention specifies.
	"encoding/base64"
	"strconv"
	"time"
)

// TURNCredentials returns time-limited TURN credentials for user in the
// "TURN REST API" convention (draft-uberti-behave-turn-rest, as coturn's
// use-auth-secret and browsers' iceServers expect): the username is
// "<unix-expiry>:<user>" with expiry = now + ttl, and the password is
// TURNPassword(secret, username). Any server holding secret can check them
// without state; the rendezvous hands them out and turnrelay checks them.
func TURNCredentials(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + user
	return username, TURNPassword(secret, username)
}

// TURNPassword is base64(HMAC-SHA1(secret, username)), the TURN REST API
// password for username.
func TURNPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
