//go:build !race

package streamrelay

const raceEnabled = false
