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
	src := addrString(ra.SrcAddr)
	if ra.Realm != s.cfg.Realm {
		s.authFailed(reasonRealm, ra.Username, src)
		return "", nil, false
	}
	expiry, user, err := ParseUsername(ra.Username)
	if err != nil {
		s.authFailed(reasonMalformed, ra.Username, src)
		return "", nil, false
	}
	if !s.cfg.Now().Before(expiry) {
		s.authFailed(reasonExpired, ra.Username, src)
		return "", nil, false
	}
	password := crypto.TURNPassword(s.cfg.Secret, ra.Username)
	return user, turn.GenerateAuthKey(ra.Username, ra.Realm, password), true
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
