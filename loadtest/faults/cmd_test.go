package faults

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFaultsFlags(t *testing.T) {
	o, err := parseFaultsFlags([]string{"--faults", "direct-cut,nat-flush/symmetric", "--runs", "3", "--rate", "2", "--size", "20"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.faults) != 2 || o.runs != 3 || o.rate != 2<<20 || o.size != 20<<20 || o.at != 2*time.Second {
		t.Fatalf("parsed %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--faults", "reboot"}, "unknown fault"},
		{[]string{"--runs", "0"}, "--runs 0"},
		{[]string{"--rate", "0"}, "--rate 0"},
		{[]string{"--size", "4"}, "raise --size"},
		{[]string{"extra"}, "takes only flags"},
	} {
		_, err := parseFaultsFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one saying %q", tc.args, err, tc.want)
		}
	}
}
