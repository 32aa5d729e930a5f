package mesh

import "errors"

// Errors of the codec and of Node.
var (
	// ErrShort: a message shorter than its header and tag.
	ErrShort = errors.New("mesh: message truncated")
	// ErrTooLong: a message or payload above the maximum.
	ErrTooLong = errors.New("mesh: message too long")
	// ErrMagic: not a mesh message (wrong magic bytes).
	ErrMagic = errors.New("mesh: not a mesh message")
	// ErrVersion: a mesh message of a version this build does not read.
	ErrVersion = errors.New("mesh: unknown version")
	// ErrKind: an unknown message kind.
	ErrKind = errors.New("mesh: unknown message kind")
	// ErrAddr: a malformed destination address.
	ErrAddr = errors.New("mesh: bad destination address")
	// ErrMAC: the tag does not verify (not sent with this deployment's
	// peer secret, or altered).
	ErrMAC = errors.New("mesh: bad tag")
	// ErrSecret: a peer secret too short to key the mesh.
	ErrSecret = errors.New("mesh: peer secret too short")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("mesh: invalid config")
	// ErrPeers: an invalid peer list.
	ErrPeers = errors.New("mesh: invalid peer list")
)
