// Package node embeds a keymesh peer in a Go program: "network as code". A
// Node holds the program's network identity (an Ed25519 key), registers with
// a rendezvous server, and opens end-to-end encrypted streams to other peers
// by peer ID or overlay address, whatever NATs lie between them.
//
//	n, err := node.New(ctx, node.Config{KeyFile: "id.key", Server: "rz.example.net:7000#<server-id>", AllowAny: true})
//	c, err := n.Dial(ctx, "<peer-id>")   // a net.Conn
//	l := n.Listen()                      // a net.Listener
//
// Sessions are QUIC connections (one per remote peer, mutually
// authenticated by the two keys) over the path layer, which takes the relay
// at once and switches to a direct path when hole punching succeeds, back
// to the relay when the direct path dies, and keeps sessions alive when
// either side's address changes. Each stream carries a 2-byte port: Dial
// and Listen use port 0, DialPort and ListenPort others.
package node
