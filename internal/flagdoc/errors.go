package flagdoc

import "errors"

var (
	// ErrLayout means a help text does not have the layout Parse knows.
	ErrLayout = errors.New("unexpected help layout")
	// ErrTable means a Markdown flag table could not be read back.
	ErrTable = errors.New("malformed flag table")
)
