package terraform_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/keymesh/keymesh/internal/crypto"
)

// sshPublicKey returns a key in the OpenSSH form that the tls provider's
// public_key_openssh has: "ssh-ed25519 <base64 blob>\n".
func sshPublicKey(pub ed25519.PublicKey) string {
	var blob []byte
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + "\n"
}

// testKeys returns the tls_private_key stand-ins with the given OpenSSH
// public keys for the rendezvous (server) and the relay.
func testKeys(server, relay string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"server": cty.ObjectVal(map[string]cty.Value{"public_key_openssh": cty.StringVal(server)}),
		"relay":  cty.ObjectVal(map[string]cty.Value{"public_key_openssh": cty.StringVal(relay)}),
	})
}

// peerIDLocals are the locals of server_id.tf in order.
var peerIDLocals = []string{"base64_alphabet", "base32_alphabet", "ssh_public_keys", "ssh_key_bits", "public_key_bits", "peer_ids", "server_peer_id"}

// serverPeerIDs evaluates server_id.tf's locals for given OpenSSH keys and
// returns the rendezvous's and the relay's peer IDs.
func serverPeerIDs(t *testing.T, root *tfModule, server, relay string) (string, string, error) {
	t.Helper()
	v, err := evalLocalsWith(root, map[string]cty.Value{"tls_private_key": testKeys(server, relay)}, peerIDLocals...)
	if err != nil {
		return "", "", err
	}
	return v.GetAttr("server_peer_id").AsString(), v.GetAttr("peer_ids").GetAttr("relay").AsString(), nil
}

// TestServerPeerIDMatchesCrypto checks that the HCL in server_id.tf turns
// the server's public key into the same peer ID as internal/crypto does,
// for keys with all-zero, all-one and random bits.
func TestServerPeerIDMatchesCrypto(t *testing.T) {
	root := loadConfig(t, ".")["."]
	keys := []ed25519.PublicKey{make(ed25519.PublicKey, 32), ed25519.PublicKey(bytesOf(0xff, 32))}
	for i := 0; i < 20; i++ {
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			t.Fatal(err)
		}
		pid := id.ID()
		keys = append(keys, ed25519.PublicKey(pid[:]))
	}
	for i, k := range keys {
		want, err := crypto.PeerIDFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		other := keys[(i+1)%len(keys)]
		wantOther, _ := crypto.PeerIDFromKey(other)
		got, gotOther, err := serverPeerIDs(t, root, sshPublicKey(k), sshPublicKey(other))
		if err != nil {
			t.Fatalf("evaluate server_id.tf: %v", err)
		}
		if got != want.String() || gotOther != wantOther.String() {
			t.Fatalf("server_id.tf gives %q and %q for keys %x and %x, internal/crypto gives %q and %q", got, gotOther, []byte(k), []byte(other), want, wantOther)
		}
		if _, err := crypto.ParsePeerID(got); err != nil {
			t.Fatalf("server_id.tf gives %q, which internal/crypto refuses: %v", got, err)
		}
	}
}

// TestServerPeerIDNoticesWrongOffset makes sure the comparison above can
// fail: an off-by-one in the bit offset must give another ID.
func TestServerPeerIDNoticesWrongOffset(t *testing.T) {
	dir := copyConfig(t, ".")
	mutate(t, dir, "server_id.tf", "substr(bits, 152, 256)", "substr(bits, 144, 256)")
	root := loadConfig(t, dir)["."]
	k := ed25519.PublicKey(bytesOf(0x5a, 32))
	want, _ := crypto.PeerIDFromKey(k)
	got, _, err := serverPeerIDs(t, root, sshPublicKey(k), sshPublicKey(k))
	if err == nil && got == want.String() {
		t.Fatalf("a wrong bit offset still gave the right peer ID %q", got)
	}
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
