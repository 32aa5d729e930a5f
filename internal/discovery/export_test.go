package discovery

// Test helpers shared with the external test package discovery_test.
var (
	RandRecord   = randRecord
	SameRecord   = sameRecord
	NewFakeClock = newFakeClock
	AppendRecord = appendRecord
	RecordSent   = recordSent
)
