package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
)

// cookieLabel separates the cookie secret from every other use of a ticket
// key.
const cookieLabel = "keymesh relay address-validation cookie v1"

func deriveCookieSecret(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(cookieLabel))
	return m.Sum(nil)
}

// CookieSecret is a secret for a CookieJar that every relay instance holding
// the same seal key derives alike, so a cookie one instance hands out is
// accepted by another behind the same address. It is HMAC-SHA256 of a fixed
// label under the seal key: knowing it reveals nothing about the key.
func (tk *TicketKeys) CookieSecret() []byte { return append([]byte(nil), tk.cookie...) }
