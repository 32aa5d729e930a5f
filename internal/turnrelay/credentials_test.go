package turnrelay

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestCredentialsRoundTrip(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	u, _ := crypto.TURNCredentials(testSecret, "peer:with:colons", 10*time.Minute, now)
	exp, user, err := ParseUsername(u)
	if err != nil {
		t.Fatal(err)
	}
	if user != "peer:with:colons" {
		t.Fatalf("user %q", user)
	}
	if !exp.Equal(now.Add(10 * time.Minute)) {
		t.Fatalf("expiry %v, want %v", exp, now.Add(10*time.Minute))
	}
}

func TestParseUsernameRejects(t *testing.T) {
	for _, in := range []string{
		"", "alice", ":alice", "123:", "12a:alice", "-5:alice", "+5:alice", " 5:alice",
		"1234567890123456789:alice", // 19 digits
		"1:" + strings.Repeat("x", MaxUsernameLen),
	} {
		if _, _, err := ParseUsername(in); !errors.Is(err, ErrUsername) {
			t.Errorf("ParseUsername(%q) err = %v, want ErrUsername", in, err)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{
		"1700000000:alice", "0:x", "1700000000:a:b:c", "", ":", "abc:def",
		"999999999999999999:u", "1234567890123456789:u", "17\x00:u", "1700000000:\xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		exp, user, err := ParseUsername(in)
		if err != nil {
			if !errors.Is(err, ErrUsername) {
				t.Fatalf("error %v is not ErrUsername", err)
			}
			return
		}
		ts, rest, ok := strings.Cut(in, ":")
		if !ok || rest != user || user == "" || len(in) > MaxUsernameLen {
			t.Fatalf("accepted %q as user %q", in, user)
		}
		if exp.Unix() < 0 {
			t.Fatalf("negative expiry %d from %q", exp.Unix(), in)
		}
		// The expiry is the decimal number before the first ':'.
		if n, err := strconv.ParseInt(ts, 10, 64); err != nil || n != exp.Unix() {
			t.Fatalf("expiry %d does not match %q (%v)", exp.Unix(), ts, err)
		}
	})
}
