// Command derpgen is the DERP side of `loadtest relay`: it connects DERP
// clients to a derper with tailscale.com's own client, and on each command
// from its standard input sends one paced step of packets from sender
// clients to receiver clients and prints what arrived, as one JSON line.
// It lives in this tool module so that the keymesh module does not depend
// on tailscale.com.
//
// Protocol (one line each): derpgen prints {"ready":true} once every
// client is connected; each input line `step <pps> <duration>` answers
// {"target":N,"sent":N,"received":N,"elapsed_ns":N,"hist":[...]} where hist counts
// one-way latencies in the buckets of loadtest/relaybench's histogram.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "derpgen:", err)
		os.Exit(1)
	}
}

// histBuckets and bucket match loadtest/relaybench: 16 sub-buckets per
// power of two of the latency in nanoseconds.
const histBuckets = 64 * 16

func bucket(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	u := uint64(ns)
	e := bits.Len64(u) - 5
	return min(e*16+int(u>>uint(e)), histBuckets-1)
}

type client struct {
	c   *derphttp.Client
	pub key.NodePublic
}

func run() error {
	var (
		addr      = flag.String("addr", "", "derper's ip:port (TLS)")
		flows     = flag.Int("flows", 10, "flows: sender clients, each sending to one receiver")
		receivers = flag.Int("receivers", 64, "most receiver clients")
		size      = flag.Int("size", 1200, "payload bytes")
	)
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	region := &tailcfg.DERPRegion{RegionID: 900, RegionCode: "bench", Nodes: []*tailcfg.DERPNode{{
		Name: "900a", RegionID: 900, HostName: ap.Addr().String(), IPv4: ap.Addr().String(),
		DERPPort: int(ap.Port()), InsecureForTests: true, STUNPort: -1,
	}}}
	logf := func(string, ...any) {}
	ctx := context.Background()
	netMon := netmon.NewStatic()
	dial := func() (*client, error) {
		priv := key.NewNode()
		c := derphttp.NewRegionClient(priv, logf, netMon, func() *tailcfg.DERPRegion { return region })
		if err := c.Connect(ctx); err != nil {
			return nil, err
		}
		return &client{c: c, pub: priv.Public()}, nil
	}
	var recv, send []*client
	for range min(*flows, *receivers) {
		c, err := dial()
		if err != nil {
			return fmt.Errorf("receiver: %w", err)
		}
		recv = append(recv, c)
	}
	for range *flows {
		c, err := dial()
		if err != nil {
			return fmt.Errorf("sender: %w", err)
		}
		send = append(send, c)
	}
	defer func() {
		for _, c := range append(recv, send...) {
			c.c.Close()
		}
	}()

	var (
		phase    atomic.Uint64
		received atomic.Uint64
		hist     [histBuckets]atomic.Uint64
	)
	start := time.Now()
	for _, r := range recv {
		go func() {
			for {
				m, err := r.c.Recv()
				if err != nil {
					return
				}
				p, ok := m.(derp.ReceivedPacket)
				if !ok || len(p.Data) < 16 || binary.BigEndian.Uint64(p.Data) != phase.Load() {
					continue
				}
				received.Add(1)
				sentAt := int64(binary.BigEndian.Uint64(p.Data[8:]))
				hist[bucket(int64(time.Since(start))-sentAt)].Add(1)
			}
		}()
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]bool{"ready": true}); err != nil {
		return err
	}
	payload := make([]byte, *size)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 3 || f[0] != "step" {
			return fmt.Errorf("want `step <pps> <duration>`, got %q", in.Text())
		}
		rate, err1 := strconv.ParseFloat(f[1], 64)
		d, err2 := time.ParseDuration(f[2])
		if err1 != nil || err2 != nil || rate <= 0 {
			return fmt.Errorf("bad step %q", in.Text())
		}
		ph := phase.Add(1)
		received.Store(0)
		for i := range hist {
			hist[i].Store(0)
		}
		binary.BigEndian.PutUint64(payload, ph)
		t0 := time.Now()
		target := uint64(max(1, rate*d.Seconds()+0.5))
		var sent uint64
		k := 0
		for sent < target {
			el := time.Since(t0)
			if el >= 2*d+time.Second {
				break // hopelessly behind
			}
			due := min(target, uint64(el.Seconds()*rate)+1)
			if sent >= due {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			for sent < due {
				s := send[k]
				dst := recv[k%len(recv)]
				k = (k + 1) % len(send)
				binary.BigEndian.PutUint64(payload[8:], uint64(time.Since(start)))
				if err := s.c.Send(dst.pub, payload); err != nil {
					return fmt.Errorf("send: %w", err)
				}
				sent++
			}
		}
		elapsed := time.Since(t0)
		time.Sleep(300 * time.Millisecond) // let the queues drain
		phase.Add(1)                       // late packets count no more
		h := make([]uint64, histBuckets)
		for i := range hist {
			h[i] = hist[i].Load()
		}
		if err := out.Encode(map[string]any{"target": target, "sent": sent, "received": received.Load(), "elapsed_ns": elapsed.Nanoseconds(), "hist": h}); err != nil {
			return err
		}
	}
	return in.Err()
}
