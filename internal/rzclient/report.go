package rzclient

import "github.com/keymesh/keymesh/internal/wire"

// maxUnconfirmed bounds the reports kept to resend after a challenge.
const maxUnconfirmed = 8

// Report sends a traversal outcome report to the server, with the cookie
// the client holds. The server answers nothing but a challenge, after
// which the client resends the reports it sent since (at most
// maxUnconfirmed, once each).
func (c *Client) Report(r wire.Report) error {
	c.mu.Lock()
	r.Cookie = c.cookie
	if len(c.reports) == maxUnconfirmed {
		c.reports = c.reports[1:]
	}
	c.reports = append(c.reports, r)
	c.mu.Unlock()
	return c.send(&r)
}

// onReportChallenge resends, with the new cookie, the reports sent before
// the challenge, and forgets them.
func (c *Client) onReportChallenge() {
	c.mu.Lock()
	again := c.reports
	c.reports = nil
	cookie := c.cookie
	c.mu.Unlock()
	for _, r := range again {
		r.Cookie = cookie
		if err := c.send(&r); err != nil {
			c.setError(err)
		}
	}
}
