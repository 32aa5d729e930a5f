//go:build !unix

package daemon

import "io/fs"

// fileOwner reports no owner: this OS has no uid in its file information,
// so only the mode checks apply.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }
