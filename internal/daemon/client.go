package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/keymesh/keymesh/internal/netcheck"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// Client talks to a daemon's local API over its Unix socket.
type Client struct {
	// Socket is the path of the daemon's socket.
	Socket string
}

// APIError is a failure the daemon reported.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return e.Msg }

// dial connects to the daemon, and only to one run by the current user:
// the socket file and its directory must be this user's (a directory
// others can write to must be sticky), and the process that accepted must
// run as this user (SO_PEERCRED).
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if err := checkSocketFile(c.Socket); err != nil {
		if isNoDaemon(err) {
			return nil, fmt.Errorf("%w at %s (start one with `peer up --server host:port#id`, or point --socket at it)", ErrNoDaemon, c.Socket)
		}
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if isNoDaemon(err) {
			return nil, fmt.Errorf("%w at %s (start one with `peer up --server host:port#id`, or point --socket at it)", ErrNoDaemon, c.Socket)
		}
		return nil, fmt.Errorf("daemon socket %s: %w", c.Socket, err)
	}
	if err := checkOwner(conn, os.Geteuid()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("daemon socket %s: %w; not talking to it", c.Socket, err)
	}
	return conn, nil
}

func (c *Client) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		DisableKeepAlives: true,
	}}
}

// do sends a JSON request and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://keymesh" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, out)
}

func decodeAnswer(resp *http.Response, out any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read daemon answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var ae apiError
		if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
			return &APIError{Code: resp.StatusCode, Msg: ae.Error}
		}
		return &APIError{Code: resp.StatusCode, Msg: fmt.Sprintf("daemon answered %s", resp.Status)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("daemon answer: %w", err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (DaemonStatus, error) {
	var st DaemonStatus
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Ping pings peer once; timeout (if > 0) bounds it on the daemon's side.
func (c *Client) Ping(ctx context.Context, peer string, timeout time.Duration) (PingResult, error) {
	q := url.Values{"peer": {peer}}
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	var res PingResult
	err := c.do(ctx, http.MethodPost, "/v1/ping", q, &res)
	res.RTT = time.Duration(res.RTTms * float64(time.Millisecond))
	return res, err
}

// StreamResult waits for the daemon's side of a stream to end (close the
// Stream first) and returns the error it ended with, if any: a peer that
// reset the stream, a session that died. The byte stream itself cannot say
// so, since its end looks the same either way.
func (c *Client) StreamResult(ctx context.Context, id uint64) error {
	var res StreamResult
	if err := c.do(ctx, http.MethodGet, "/v1/stream", url.Values{"id": {strconv.FormatUint(id, 10)}}, &res); err != nil {
		return err
	}
	if res.Error != "" {
		return &StreamError{Msg: res.Error}
	}
	return nil
}

// StreamError is how the daemon saw a stream fail.
type StreamError struct{ Msg string }

func (e *StreamError) Error() string { return "stream failed: " + e.Msg }

// Unexpose ends a background expose.
func (c *Client) Unexpose(ctx context.Context, port uint16) error {
	return c.do(ctx, http.MethodDelete, "/v1/expose", url.Values{"port": {strconv.Itoa(int(port))}}, nil)
}

// Expose exposes the local TCP port to peers. With bg it returns at once
// and the expose stays until Unexpose or the daemon ends; otherwise it
// returns after the daemon confirmed, and the expose lasts until the
// returned closer is closed (or this process ends).
func (c *Client) Expose(ctx context.Context, port uint16, bg bool) (io.Closer, error) {
	q := url.Values{"port": {strconv.Itoa(int(port))}}
	if bg {
		q.Set("bg", "1")
		return io.NopCloser(nil), c.do(ctx, http.MethodPost, "/v1/expose", q, nil)
	}
	conn, _, resp, err := c.request(ctx, "/v1/expose", q, false)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer conn.Close()
		return nil, decodeAnswer(resp, nil)
	}
	// The answer's JSON line arrives, then the daemon holds the request.
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		conn.Close()
		return nil, fmt.Errorf("daemon answer: %w", err)
	}
	return conn, nil
}

// Dial opens a stream to port of peer through the daemon. The returned
// connection supports CloseWrite (half-close).
func (c *Client) Dial(ctx context.Context, peer string, port uint16) (*Stream, error) {
	return c.stream(ctx, "/v1/dial", url.Values{"peer": {peer}, "port": {strconv.Itoa(int(port))}})
}

// DialUDP opens a UDP flow to port of peer through the daemon's userspace
// stack (userspace mode): each datagram crosses the connection as a frame
// (WriteFrame, ReadFrame).
func (c *Client) DialUDP(ctx context.Context, peer string, port uint16) (*Stream, error) {
	return c.stream(ctx, "/v1/dial", url.Values{"peer": {peer}, "port": {strconv.Itoa(int(port))}, "proto": {"udp"}})
}

// Accept waits for the next stream arriving for port (0 is the default
// listener) and returns it.
func (c *Client) Accept(ctx context.Context, port uint16) (*Stream, error) {
	return c.stream(ctx, "/v1/accept", url.Values{"port": {strconv.Itoa(int(port))}})
}

// Stream is a byte stream to a peer, carried over the daemon's socket.
type Stream struct {
	net.Conn
	r *bufio.Reader
	// Peer names the other end (its peer ID when the daemon knows it).
	Peer string
	// ID numbers the stream in the daemon, for Client.StreamResult.
	ID uint64
}

func (s *Stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// CloseWrite ends the sending side: the peer reads EOF.
func (s *Stream) CloseWrite() error {
	if cw, ok := s.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *Client) stream(ctx context.Context, path string, q url.Values) (*Stream, error) {
	conn, br, resp, err := c.request(ctx, path, q, true)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		if err := decodeAnswer(resp, nil); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("daemon answered %s, want 101", resp.Status)
	}
	id, _ := strconv.ParseUint(resp.Header.Get(headerStream), 10, 64)
	return &Stream{Conn: conn, r: br, Peer: resp.Header.Get(headerPeer), ID: id}, nil
}

// request writes a POST by hand on a fresh socket connection and reads the
// answer's head, leaving the connection for the caller. Cancelling ctx
// before the head arrives closes the connection.
func (c *Client) request(ctx context.Context, path string, q url.Values, up bool) (net.Conn, *bufio.Reader, *http.Response, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	req, _ := http.NewRequest(http.MethodPost, "http://keymesh"+path+"?"+q.Encode(), nil)
	if up {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgradeProto)
	}
	if err := req.Write(conn); err != nil {
		stop()
		conn.Close()
		return nil, nil, nil, ctxErr(ctx, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, req)
	if !stop() {
		conn.Close()
		return nil, nil, nil, ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, nil, nil, ctxErr(ctx, fmt.Errorf("daemon answer: %w", err))
	}
	return conn, br, resp, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Netcheck asks the daemon to measure its network.
func (c *Client) Netcheck(ctx context.Context) (netcheck.Report, error) {
	var rep netcheck.Report
	err := c.do(ctx, http.MethodPost, "/v1/netcheck", nil, &rep)
	return rep, err
}

// Metrics returns the daemon's metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	b, err := c.get(ctx, "/v1/metrics", 4<<20)
	return string(b), err
}

// CPUProfile returns the daemon's CPU profile (pprof format) over the next
// d, rounded up to whole seconds; the daemon serves it with --pprof.
func (c *Client) CPUProfile(ctx context.Context, d time.Duration) ([]byte, error) {
	secs := max(int((d+time.Second-1)/time.Second), 1)
	return c.get(ctx, fmt.Sprintf("/v1/debug/pprof/profile?seconds=%d", secs), 64<<20)
}

// get returns the body of a GET of path, at most limit bytes.
func (c *Client) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://keymesh"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("read daemon answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &APIError{Code: resp.StatusCode, Msg: fmt.Sprintf("daemon answered %s to GET %s", resp.Status, path)}
	}
	return body, nil
}
