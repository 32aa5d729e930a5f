output "connect_string" {
  description = "What a peer needs to use this deployment: `keymesh-peer up --server <connect_string>` (the rendezvous's anycast address and port, then # and the server's peer ID, which the peer pins)."
  value       = "${local.anycast_ips[0]}:${local.ports.rendezvous}#${local.server_peer_id}"
}

output "connect_strings" {
  description = "The connect string on every anycast address (the accelerator has two; either reaches every region)."
  value       = [for ip in local.anycast_ips : "${ip}:${local.ports.rendezvous}#${local.server_peer_id}"]
}

output "anycast_ips" {
  description = "The accelerator's static anycast IPv4 addresses. Point acme_domain's A records here."
  value       = local.anycast_ips
}

output "accelerator_dns_name" {
  description = "DNS name of the accelerator; it resolves to anycast_ips."
  value       = aws_globalaccelerator_accelerator.this.dns_name
}

output "server_peer_id" {
  description = "The rendezvous servers' peer ID (lowercase base32 of the Ed25519 public key)."
  value       = local.server_peer_id
}

output "relay_peer_id" {
  description = "The relays' peer ID, pinned in stream_relay_url when there is no ACME certificate."
  value       = local.peer_ids.relay
}

output "stream_relay_url" {
  description = "The stream relay (WebSocket over TLS on TCP 443) as the rendezvous advertises it to peers whose UDP is blocked."
  value       = local.stream_relay_url
}

output "server_public_key_openssh" {
  description = "The rendezvous servers' Ed25519 public key in OpenSSH form, to cross-check server_peer_id."
  value       = trimspace(tls_private_key.server.public_key_openssh)
}

output "ports" {
  description = "Service ports on the anycast addresses (admin is only on the instances)."
  value       = local.ports
}

output "turn_uris" {
  description = "TURN URIs for WebRTC/ICE clients; credentials come from the TURN REST API secret (Secrets Manager <deployment>/turn-secret)."
  value = [
    "turn:${local.public_host}:${local.ports.turn}?transport=udp",
    "turn:${local.public_host}:${local.ports.turn}?transport=tcp",
  ]
}

output "redis_endpoint" {
  description = "Primary endpoint of the shared registry (TLS and AUTH; reachable only from the regions' VPCs)."
  value       = "${aws_elasticache_replication_group.registry.primary_endpoint_address}:${aws_elasticache_replication_group.registry.port}"
}

output "secret_arns" {
  description = "Secrets Manager ARNs (primary region) of the shared secrets."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "release_version" {
  description = "The release the instances run."
  value       = local.release_version
}

output "autoscaling_groups" {
  description = "Auto scaling group names by region and service, for `aws autoscaling start-instance-refresh` and the like."
  value       = { for r, m in local.deployed : r => m.autoscaling_group_names }
}

output "join_token" {
  description = "The join token peers present when registering (when require_join_token): write it to a file of mode 0600 and start peers with --join-token-file <file> (KEYMESH_JOIN_TOKEN_FILE)."
  value       = local.secret_values["join-token"]
  sensitive   = true
}
