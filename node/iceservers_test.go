package node

import (
	"encoding/json"
	"testing"
)

// TestICEServersWebRTCShape: the TURN credentials a node receives come out
// as WebRTC's iceServers, ready to hand to an RTCPeerConnection.
func TestICEServersWebRTCShape(t *testing.T) {
	if got := iceServers(nil, "u", "p"); got != nil {
		t.Fatalf("no URIs: %v, want none", got)
	}
	st := Status{ICEServers: iceServers([]string{"turn:203.0.113.2:3478", "turn:203.0.113.2:3478?transport=tcp"},
		"1900000000:abcdefgh", "c2VjcmV0")}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var shape struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"ice_servers"`
	}
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	if len(shape.ICEServers) != 1 || len(shape.ICEServers[0].URLs) != 2 ||
		shape.ICEServers[0].Username != "1900000000:abcdefgh" || shape.ICEServers[0].Credential != "c2VjcmV0" {
		t.Fatalf("ice_servers %s", b)
	}
}
