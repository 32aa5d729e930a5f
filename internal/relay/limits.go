package relay

import (
	"github.com/keymesh/keymesh/internal/ratelimit"
)

// limits are the server's rate limits: a per-source table for each kind of
// request and the global budget of signature checks.
type limits struct {
	send      *ratelimit.Limiter // RelaySend frames
	challenge *ratelimit.Limiter // challenges to binds from unproven addresses
	bind      *ratelimit.Limiter // binds from proven addresses
	sigs      *ratelimit.Budget  // signature checks, all sources together
}

func newLimits(r RateLimit, now int64) limits {
	per := func(rate, burst float64) *ratelimit.Limiter {
		if r.Disabled {
			rate = -1 // ratelimit: off
		}
		return ratelimit.New(ratelimit.Config{PerSecond: rate, Burst: burst, MaxSources: r.MaxSources})
	}
	return limits{
		send:      per(r.Rate, r.Burst),
		challenge: per(r.ChallengeRate, r.ChallengeBurst),
		bind:      per(r.BindRate, r.BindBurst),
		sigs:      ratelimit.NewBudget(r.BindsPerSecond, r.BindsPerSecond, now),
	}
}
