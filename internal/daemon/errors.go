package daemon

import "errors"

// Errors returned by this package; callers match them with errors.Is.
var (
	ErrNoDaemon      = errors.New("no peer daemon is running")
	ErrDaemonRunning = errors.New("a peer daemon is already running")
	ErrUnsafeDir     = errors.New("socket directory is not private")
	ErrPortInUse     = errors.New("port already in use")
	ErrBadPort       = errors.New("bad port")
	ErrNotOverlay    = errors.New("not a keymesh destination")
	ErrUnknownName   = errors.New("unknown keymesh name")
	// ErrOtherUser means a local connection came from, or a socket
	// belongs to, a user other than the one running this process.
	ErrOtherUser = errors.New("another user")
)
