# The servers' peer IDs: the rendezvous's for the connect string, the
# relays' to pin the stream relay.
#
# A peer ID (internal/crypto.PeerID) is the 32-byte Ed25519 public key in
# lowercase RFC 4648 base32 without padding: 52 characters. Terraform
# strings cannot hold raw bytes, so this works on bits written as "0" and
# "1": the OpenSSH public key "ssh-ed25519 <base64>" has a 51-byte blob (a
# 4-byte length, "ssh-ed25519", a 4-byte length, the 32-byte key), so the
# key is bits 152 to 407 of the decoded blob. 256 bits make 51 groups of 5
# and one of 1, padded with zeros as base32 does.
# deploy/terraform/peerid_test.go checks this against internal/crypto.
locals {
  base64_alphabet = split("", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
  base32_alphabet = "abcdefghijklmnopqrstuvwxyz234567"

  ssh_public_keys = {
    rendezvous = tls_private_key.server.public_key_openssh
    relay      = tls_private_key.relay.public_key_openssh
  }
  ssh_key_bits = {
    for k, key in local.ssh_public_keys :
    k => join("", [for c in split("", split(" ", trimspace(key))[1]) : format("%06b", index(local.base64_alphabet, c))])
  }
  public_key_bits = { for k, bits in local.ssh_key_bits : k => "${substr(bits, 152, 256)}0000" }
  peer_ids = {
    for k, bits in local.public_key_bits :
    k => join("", [for i in range(52) : substr(local.base32_alphabet, parseint(substr(bits, i * 5, 5), 2), 1)])
  }
  server_peer_id = local.peer_ids.rendezvous
}
