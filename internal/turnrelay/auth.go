package turnrelay

import (
	"net"

	"github.com/pion/turn/v5"

	"github.com/keymesh/keymesh/internal/crypto"
)

// authenticate is pion's AuthHandler for REST-API credentials. It refuses
// a foreign realm, a malformed username and an expired one, and otherwise
// returns the long-term key (MD5 of username:realm:password, with password
// = base64(HMAC-SHA1(secret, username))) for pion to verify the request's
// MESSAGE-INTEGRITY with; a wrong password fails that check (see onAuth).
// The user ID it returns, the part after ':', is what quotas count.
func (s *Server) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	user, key, reason := s.longTermKey(ra.Username, ra.Realm)
	if reason != "" {
		s.authFailed(reason, ra.Username, addrString(ra.SrcAddr))
		return "", nil, false
	}
	return user, key, true
}

// longTermKey returns the user ID and long-term key of username in realm,
// or the reason (reasonRealm, reasonMalformed, reasonExpired) they are
// refused. The AuthHandler and the guard's own integrity check
// (checkIntegrity) both take the key from here.
func (s *Server) longTermKey(username, realm string) (user string, key []byte, reason string) {
	if realm != s.cfg.Realm {
		return "", nil, reasonRealm
	}
	expiry, user, err := ParseUsername(username)
	if err != nil {
		return "", nil, reasonMalformed
	}
	if !s.cfg.Now().Before(expiry) {
		return "", nil, reasonExpired
	}
	password := crypto.TURNPassword(s.cfg.Secret, username)
	return user, turn.GenerateAuthKey(username, realm, password), ""
}

// onAuth is pion's OnAuth event; a false verdict means the request's
// MESSAGE-INTEGRITY did not verify against the key: a wrong password.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if !verdict {
		s.metrics.authFailures.WithLabelValues(reasonIntegrity).Inc()
		s.log.Debug("turn auth failed", "reason", reasonIntegrity, "username", username,
			"method", method, "src", addrString(src))
	}
}

func (s *Server) authFailed(reason, username, src string) {
	s.metrics.authFailures.WithLabelValues(reason).Inc()
	s.log.Debug("turn auth failed", "reason", reason, "username", username, "src", src)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
