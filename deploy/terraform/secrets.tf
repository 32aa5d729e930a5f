# Shared secrets, made here once and kept in Secrets Manager in the primary
# region with a replica in every other region; instances read their region's
# replica at boot. Their values are in the Terraform state too: keep the
# state in an encrypted backend (see README).

# The rendezvous servers' identity: every instance answers as the same key,
# the one peers pin in the connect string.
resource "tls_private_key" "server" {
  algorithm = "ED25519"
}

# The relays' identity: the stream relay's TLS certificate is bound to it,
# and the rendezvous advertises the relay with this key pinned.
resource "tls_private_key" "relay" {
  algorithm = "ED25519"
}

# Key of the instance mesh (HMAC between instances of one service).
resource "random_bytes" "peer_secret" {
  length = 32
}

# MAC key of the rendezvous's stateless address cookies.
resource "random_bytes" "cookie_secret" {
  length = 32
}

# TURN REST API shared secret (relay checks, rendezvous hands out
# credentials).
resource "random_bytes" "turn_secret" {
  length = 32
}

# The join token every peer must present when it registers (unless
# require_join_token is false): output join_token.
resource "random_bytes" "join_token" {
  length = 32
}

# Redis AUTH token; ElastiCache allows printable characters other than
# / " @ and space, so letters and digits only.
resource "random_password" "redis_auth" {
  length  = 48
  special = false
}

# Ticket keys in two slots: slot g % 2 holds generation g's key and is made
# anew only when that generation changes, so raising ticket_key_generation by
# one adds a new sealing key and keeps the previous one for open.
resource "random_bytes" "ticket_key" {
  count  = 2
  length = 32

  keepers = {
    generation = count.index == var.ticket_key_generation % 2 ? var.ticket_key_generation : var.ticket_key_generation - 1
  }
}

locals {
  ticket_current  = var.ticket_key_generation
  ticket_previous = var.ticket_key_generation - 1

  # The ticket key file: `<id> <64 hex digits>` a line, the first line seals.
  ticket_keys = join("", concat(
    ["# keymesh relay ticket keys, generation ${local.ticket_current}; the first line seals\n"],
    ["${local.ticket_current % 256} ${random_bytes.ticket_key[local.ticket_current % 2].hex}\n"],
    local.ticket_previous >= 1 ? ["${local.ticket_previous % 256} ${random_bytes.ticket_key[local.ticket_previous % 2].hex}\n"] : [],
  ))

  # Secret name (file name on the servers) to value.
  secret_values = {
    "server-key"    = tls_private_key.server.private_key_pem_pkcs8
    "relay-key"     = tls_private_key.relay.private_key_pem_pkcs8
    "cookie-secret" = "${random_bytes.cookie_secret.base64}\n"
    "turn-secret"   = "${random_bytes.turn_secret.base64}\n"
    "redis-auth"    = random_password.redis_auth.result
    "join-token"    = "${random_bytes.join_token.base64}\n"
    "peer-secret"   = "${random_bytes.peer_secret.base64}\n"
    "ticket-keys"   = local.ticket_keys
  }

  # Changes whenever a secret does, so instances are replaced to read it.
  secrets_revision = sha256(join(",", [for k in sort(keys(local.secret_values)) : aws_secretsmanager_secret_version.this[k].version_id]))
}

resource "aws_secretsmanager_secret" "this" {
  for_each = toset(keys(local.secret_values))

  name                    = "${var.deployment_name}/${each.key}"
  description             = "keymesh ${each.key} of deployment ${var.deployment_name} (made by Terraform)"
  recovery_window_in_days = 7

  dynamic "replica" {
    for_each = toset(local.replica_names)
    content {
      region = replica.value
    }
  }
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each = aws_secretsmanager_secret.this

  secret_id     = each.value.id
  secret_string = local.secret_values[each.key]
}
