package turnrelay

import "errors"

// Sentinel errors. Callers wrap them with %w and test with errors.Is.
var (
	// ErrNoSockets: the Config has neither PacketConns nor Listeners.
	ErrNoSockets = errors.New("turnrelay: no UDP sockets or TCP listeners to serve")
	// ErrSecret: the shared secret is missing or too short.
	ErrSecret = errors.New("turnrelay: shared secret missing or too short")
	// ErrRelayIP: no usable address to bind and advertise allocations on.
	ErrRelayIP = errors.New("turnrelay: no relay IP")
	// ErrRealm: the realm is not a valid STUN realm.
	ErrRealm = errors.New("turnrelay: invalid realm")

	// ErrUsername: a username is not in the "<unix-expiry>:<user>" form.
	ErrUsername = errors.New("turnrelay: username is not <unix-expiry>:<user>")
	// ErrExpired: the credential's expiry time has passed.
	ErrExpired = errors.New("turnrelay: credential expired")
	// ErrQuota: the user already holds its maximum number of allocations.
	ErrQuota = errors.New("turnrelay: allocation quota reached")
	// ErrCapacity: the server holds its maximum number of allocations.
	ErrCapacity = errors.New("turnrelay: server allocation cap reached")

	// errPeerRefused: a peer address the relay does not send to.
	errPeerRefused = errors.New("turnrelay: peer address refused")
	// errNoEvenPort: no even relay port could be found for EVEN-PORT.
	errNoEvenPort = errors.New("turnrelay: no even relay port free")
)
