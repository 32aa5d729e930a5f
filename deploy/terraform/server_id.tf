# The rendezvous servers' peer ID, for the connect string.
#
# A peer ID (internal/crypto.PeerID) is the 32-byte Ed25519 public key in
# lowercase RFC 4648 base32 without padding: 52 characters. Terraform
# strings cannot hold raw bytes, so this works on bits written as "0" and
# "1": the OpenSSH public key "ssh-ed25519 <base64>" has a 51-byte blob (a
# 4-byte length, "ssh-ed25519", a 4-byte length, the 32-byte key), so the
# key is bits 152 to 407 of the decoded blob. 256 bits make 51 groups of 5
# and one of 1, padded with zeros as base32 does.
# deploy/terraform/terraform_test.go checks this against internal/crypto.
locals {
  base64_alphabet = split("", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
  base32_alphabet = "abcdefghijklmnopqrstuvwxyz234567"

  server_ssh_blob = split(" ", trimspace(tls_private_key.server.public_key_openssh))[1]
  server_ssh_bits = join("", [for c in split("", local.server_ssh_blob) : format("%06b", index(local.base64_alphabet, c))])
  server_key_bits = "${substr(local.server_ssh_bits, 152, 256)}0000"
  server_peer_id  = join("", [for i in range(52) : substr(local.base32_alphabet, parseint(substr(local.server_key_bits, i * 5, 5), 2), 1)])
}
