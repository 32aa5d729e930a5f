package discovery

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisURLForms is the help text of every ParseRedisURL error.
const redisURLForms = "accepted forms: redis://[user:pass@]host:port[/db], rediss://... (TLS), " +
	"redis-sentinel://[user:pass@]host1:port,host2:port/mastername (or ?master=name), " +
	"redis-cluster://[user:pass@]host1:port,host2:port (rediss-sentinel://, rediss-cluster:// for TLS); " +
	"query options: db, master, dial_timeout, read_timeout, write_timeout, pool_size, max_retries, " +
	"client_name, sentinel_username, sentinel_password"

// ParseRedisURL turns a Redis URL into options for redis.NewUniversalClient:
//
//	redis://[user:pass@]host[:port][/db]                 one server (port 6379)
//	rediss://...                                         the same over TLS
//	redis-sentinel://host1:port,host2:port/mastername    Sentinel (port 26379);
//	                                                     or ?master=name
//	redis-cluster://host1:port,host2:port                Cluster seed nodes
//
// rediss-sentinel:// and rediss-cluster:// use TLS. Query options: db,
// master, dial_timeout, read_timeout, write_timeout (Go durations or
// seconds), pool_size, max_retries, client_name, and for Sentinel
// sentinel_username and sentinel_password (user:pass in the URL authenticate
// to Redis itself). Unlike go-redis's defaults, a dial is not retried within
// one command attempt and times out after 2s, so that calls fail fast while
// Redis is down. Errors are one line that says what is wrong and which
// forms are accepted; they never repeat the password.
func ParseRedisURL(rawURL string) (*redis.UniversalOptions, error) {
	o, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %v; %s", redactURL(rawURL), err, redisURLForms)
	}
	return o, nil
}

func parseRedisURL(raw string) (*redis.UniversalOptions, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("no scheme")
	}
	var sentinel, cluster, useTLS bool
	switch strings.ToLower(scheme) {
	case "redis":
	case "rediss":
		useTLS = true
	case "redis-sentinel":
		sentinel = true
	case "rediss-sentinel":
		sentinel, useTLS = true, true
	case "redis-cluster":
		cluster = true
	case "rediss-cluster":
		cluster, useTLS = true, true
	default:
		return nil, fmt.Errorf("unknown scheme %q", scheme)
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return nil, fmt.Errorf("unexpected fragment")
	}
	authority, path, _ := strings.Cut(rest, "/")

	o := &redis.UniversalOptions{
		IsClusterMode: cluster,
		// Fail fast while Redis is down: one dial per command attempt (the
		// client still retries each command MaxRetries times with backoff)
		// and a dial timeout well below a peer's patience.
		DialTimeout:   2 * time.Second,
		DialerRetries: 1,
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		user, pass, hasPass := strings.Cut(authority[:at], ":")
		authority = authority[at+1:]
		var err error
		if o.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("bad user name escape")
		}
		if hasPass {
			if o.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("bad password escape")
			}
		}
	}
	defPort := "6379"
	if sentinel {
		defPort = "26379"
	}
	for _, h := range strings.Split(authority, ",") {
		hp, err := hostPort(h, defPort)
		if err != nil {
			return nil, err
		}
		o.Addrs = append(o.Addrs, hp)
	}
	if len(o.Addrs) > 1 && !sentinel && !cluster {
		return nil, fmt.Errorf("several hosts need redis-sentinel:// or redis-cluster://")
	}

	path = strings.Trim(path, "/")
	switch {
	case path == "":
	case sentinel:
		name, db, hasDB := strings.Cut(path, "/")
		o.MasterName = name
		if hasDB {
			if err := setDB(o, db); err != nil {
				return nil, err
			}
		}
	case cluster:
		return nil, fmt.Errorf("a cluster has no database number, so no path")
	default:
		if err := setDB(o, path); err != nil {
			return nil, err
		}
	}

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query: %v", err)
	}
	for k, vs := range q {
		v := vs[len(vs)-1]
		var err error
		switch k {
		case "db":
			if cluster {
				return nil, fmt.Errorf("a cluster has no database number")
			}
			err = setDB(o, v)
		case "master":
			if !sentinel {
				return nil, fmt.Errorf("master= needs redis-sentinel://")
			}
			o.MasterName = v
		case "sentinel_username", "sentinel_password":
			if !sentinel {
				return nil, fmt.Errorf("%s= needs redis-sentinel://", k)
			}
			if k == "sentinel_username" {
				o.SentinelUsername = v
			} else {
				o.SentinelPassword = v
			}
		case "client_name":
			o.ClientName = v
		case "dial_timeout":
			o.DialTimeout, err = parseSeconds(k, v)
		case "read_timeout":
			o.ReadTimeout, err = parseSeconds(k, v)
		case "write_timeout":
			o.WriteTimeout, err = parseSeconds(k, v)
		case "pool_size":
			o.PoolSize, err = parseCount(k, v)
		case "max_retries":
			o.MaxRetries, err = parseCount(k, v)
		default:
			return nil, fmt.Errorf("unknown option %q", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if sentinel && o.MasterName == "" {
		return nil, fmt.Errorf("sentinel URL names no master")
	}
	if useTLS {
		// The server name is taken from each node's address when dialling.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// hostPort validates one host[:port] of the authority, adding defPort.
func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port (or a bare IPv6 address).
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defPort
	}
	if host == "" || strings.ContainsAny(host, "[]/ ") {
		return "", fmt.Errorf("bad host %q", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("bad port in %q", h)
	}
	return net.JoinHostPort(host, port), nil
}

func setDB(o *redis.UniversalOptions, s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("database %q is not a number", s)
	}
	o.DB = n
	return nil
}

func parseSeconds(k, v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a duration", k, v)
	}
	return d, nil
}

func parseCount(k, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q is not a count", k, v)
	}
	return n, nil
}

// redactURL replaces the password of a URL (and sentinel_password) for
// error messages.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if user, _, hasPass := strings.Cut(authority[:at], ":"); hasPass {
			authority = user + ":xxxxx" + authority[at:]
		}
	}
	if i := strings.Index(tail, "sentinel_password="); i >= 0 {
		end := strings.IndexByte(tail[i:], '&')
		if end < 0 {
			end = len(tail) - i
		}
		tail = tail[:i] + "sentinel_password=xxxxx" + tail[i+end:]
	}
	return scheme + "://" + authority + tail
}
