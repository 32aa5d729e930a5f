package tun

import (
	"strings"
	"testing"
)

func TestIperf3Result(t *testing.T) {
	tcp := `{"end":{"sum_sent":{"bits_per_second":1000,"retransmits":7},"sum_received":{"bits_per_second":800}}}`
	bps, loss, retx, err := iperf3Result([]byte(tcp))
	if err != nil || bps != 100 || loss != 0 || retx != 7 {
		t.Fatalf("TCP: %v %v %v %v", bps, loss, retx, err)
	}
	udp := `{"end":{"sum":{"bits_per_second":1600,"lost_percent":12.5}}}`
	bps, loss, retx, err = iperf3Result([]byte(udp))
	if err != nil || bps != 200 || loss != 12.5 || retx != 0 {
		t.Fatalf("UDP: %v %v %v %v", bps, loss, retx, err)
	}
	if _, _, _, err := iperf3Result([]byte(`{"error":"unable to connect"}`)); err == nil || !strings.Contains(err.Error(), "unable") {
		t.Fatalf("error: %v", err)
	}
}

func TestTUNMarkdownRatios(t *testing.T) {
	md := tunMarkdown([]tunRow{
		{Path: "keymesh TUN TCP", Tool: "iperf3", MTU: 1280, MBps: 50, Retransmits: 900, TunnelLost: 880},
		{Path: "wireguard-go TCP", Tool: "iperf3", MTU: 1420, MBps: 100},
		{Path: "keymesh TUN UDP", Tool: "iperf3", MTU: 1280, MBps: 30, LossPct: 10},
		{Path: "wireguard-go UDP", Tool: "iperf3", MTU: 1420, MBps: 60, LossPct: 5},
		{Path: "keymesh QUIC stream", Tool: "peer pipe", MBps: 80},
	})
	for _, want := range []string{"| keymesh TUN TCP | iperf3 | 1280 | 50.0 | - | 900 | 880 | 0.50 |", "| keymesh TUN UDP | iperf3 | 1280 | 30.0 | 10.0% | - | 0 | 0.50 |", "| wireguard-go TCP | iperf3 | 1420 | 100.0 | - | 0 | - | 1.00 |", "| keymesh QUIC stream | peer pipe | - | 80.0 | - | - | - | 0.80 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
