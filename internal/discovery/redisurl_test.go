package discovery

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParseRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind string // the client NewUniversalClient builds
		want redis.UniversalOptions
	}{
		{"redis://127.0.0.1:6380/2", "single", redis.UniversalOptions{Addrs: []string{"127.0.0.1:6380"}, DB: 2}},
		{"redis://localhost", "single", redis.UniversalOptions{Addrs: []string{"localhost:6379"}}},
		{"redis://[::1]:7000", "single", redis.UniversalOptions{Addrs: []string{"[::1]:7000"}}},
		{"redis://u:p%40ss@h:1/0?dial_timeout=3&read_timeout=250ms&pool_size=9&max_retries=0&client_name=rdv",
			"single", redis.UniversalOptions{Addrs: []string{"h:1"}, Username: "u", Password: "p@ss",
				DialTimeout: 3 * time.Second, ReadTimeout: 250 * time.Millisecond, PoolSize: 9, ClientName: "rdv"}},
		{"rediss://:secret@cache.example:6380", "single", redis.UniversalOptions{Addrs: []string{"cache.example:6380"}, Password: "secret"}},
		{"redis-sentinel://s1:26379,s2/mymaster", "sentinel", redis.UniversalOptions{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"}},
		{"redis-sentinel://s1,s2?master=m&db=3&sentinel_password=x", "sentinel", redis.UniversalOptions{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "m", DB: 3, SentinelPassword: "x"}},
		{"redis-sentinel://s1/m/4", "sentinel", redis.UniversalOptions{Addrs: []string{"s1:26379"}, MasterName: "m", DB: 4}},
		{"redis-cluster://n1:7000,n2:7001,n3:7002", "cluster", redis.UniversalOptions{Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}}},
		{"redis-cluster://n1:7000", "cluster", redis.UniversalOptions{Addrs: []string{"n1:7000"}}},
		{"rediss-cluster://n1:7000,n2:7000", "cluster", redis.UniversalOptions{Addrs: []string{"n1:7000", "n2:7000"}}},
	} {
		o, err := ParseRedisURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if strings.Join(o.Addrs, " ") != strings.Join(tc.want.Addrs, " ") || o.DB != tc.want.DB ||
			o.MasterName != tc.want.MasterName || o.Username != tc.want.Username || o.Password != tc.want.Password ||
			o.SentinelPassword != tc.want.SentinelPassword || o.PoolSize != tc.want.PoolSize ||
			o.ReadTimeout != tc.want.ReadTimeout || o.ClientName != tc.want.ClientName {
			t.Errorf("%s: got %+v", tc.url, o)
		}
		if wantTimeout := max(tc.want.DialTimeout, 2*time.Second); o.DialTimeout != wantTimeout || o.DialerRetries != 1 {
			t.Errorf("%s: dial timeout %v retries %d", tc.url, o.DialTimeout, o.DialerRetries)
		}
		if tls := strings.HasPrefix(tc.url, "rediss"); tls != (o.TLSConfig != nil) {
			t.Errorf("%s: TLS %v", tc.url, o.TLSConfig != nil)
		}
		c := redis.NewUniversalClient(o)
		var kind string
		switch c.(type) {
		case *redis.ClusterClient:
			kind = "cluster"
		case *redis.Client:
			kind = "single"
			if o.MasterName != "" {
				kind = "sentinel"
			}
		}
		_ = c.Close()
		if kind != tc.kind {
			t.Errorf("%s: client is %T, want %s", tc.url, c, tc.kind)
		}
	}
}

func TestParseRedisURLErrors(t *testing.T) {
	for _, u := range []string{
		"",
		"localhost:6379",
		"http://h",
		"redis://",
		"redis://h:0",
		"redis://h:99999",
		"redis://h:x",
		"redis://h/notanumber",
		"redis://h/1/2",
		"redis://a,b",
		"redis://h?master=m",
		"redis://h?bogus=1",
		"redis://h?dial_timeout=soon",
		"redis-sentinel://s1,s2",
		"redis-cluster://n1/0",
		"redis-cluster://n1?db=1",
		"redis://h,",
		"redis://:hunter2@h?bogus=1",
	} {
		_, err := ParseRedisURL(u)
		if err == nil {
			t.Errorf("%q: accepted", u)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "accepted forms: redis://") {
			t.Errorf("%q: error is not one line naming the forms: %s", u, msg)
		}
		if strings.Contains(msg, "hunter2") {
			t.Errorf("%q: error repeats the password: %s", u, msg)
		}
	}
}
