//go:build race

package streamrelay

// raceEnabled: the race detector multiplies what memory measures.
const raceEnabled = true
