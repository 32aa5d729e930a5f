package turnrelay

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// BenchmarkChannelData relays 1200-byte ChannelData frames from a client
// through one allocation to a peer on loopback, as loadtest relay does.
func BenchmarkChannelData(b *testing.B) {
	ts := startServer(b, 1, nil)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	user, pass := crypto.TURNCredentials(testSecret, "bench", time.Hour, time.Now())
	c := dialRaw(b, "udp", ts.udp, user, pass)
	c.allocateRaw(17)
	if r := c.request(stun.MethodChannelBind, channelNumber(0x4000), peerAddr(sink.LocalAddr().(*net.UDPAddr))); r.Type.Class != stun.ClassSuccessResponse {
		b.Fatalf("channel bind: %v", r)
	}
	frame := make([]byte, 4+1200)
	binary.BigEndian.PutUint16(frame, 0x4000)
	binary.BigEndian.PutUint16(frame[2:], 1200)
	got := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			sink.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	b.ResetTimer()
	for i := range b.N {
		c.send(frame)
		if i%64 == 63 {
			time.Sleep(50 * time.Microsecond) // leave the relay room
		}
	}
	n := <-got
	b.ReportMetric(float64(n)/float64(b.N), "delivered/op")
}
