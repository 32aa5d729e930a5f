locals {
  primary_region = var.regions[0].name
  region_names   = [for r in var.regions : r.name]
  replica_names  = slice(local.region_names, 1, length(local.region_names))

  tags = merge(var.tags, {
    Project    = "keymesh"
    Deployment = var.deployment_name
  })

  # Every port the servers use. All but admin are on the anycast addresses
  # (one accelerator listener per service and protocol); admin is reached only
  # by the load balancers' health checks and admin_cidrs.
  ports = {
    rendezvous = 3478 # UDP: rendezvous protocol and STUN
    relay      = 3479 # UDP: stateless ticket relay
    relay_tls  = 443  # TCP: stream relay (WebSocket over TLS) where UDP is blocked
    turn       = 3480 # UDP and TCP: TURN (RFC 8656)
    admin      = 9090 # TCP: /healthz, /readyz, /metrics
    # UDP on each instance's own public address, not the anycast ones: the
    # authenticated mesh between the instances of one service (package mesh).
    mesh_rendezvous = 3490
    mesh_relay      = 3491
  }

  # Where the servers keep the secrets user_data fetches (one file each).
  secret_dir = "/etc/keymesh/secrets"

  # The host names clients use: the ACME domain when there is one, else the
  # first anycast address.
  public_host = var.acme_domain != "" ? var.acme_domain : aws_globalaccelerator_accelerator.this.ip_sets[0].ip_addresses[0]
  anycast_ips = flatten([for s in aws_globalaccelerator_accelerator.this.ip_sets : s.ip_addresses])

  # The stream relay's address as the rendezvous advertises it: pinned to the
  # relays' key unless they have an ACME certificate for acme_domain.
  stream_relay_url = "wss://${local.public_host}:${local.ports.relay_tls}/v1/tunnel${var.acme_domain != "" ? "" : "#${local.peer_ids.relay}"}"

  acme_env = var.acme_domain == "" ? {} : merge(
    { KEYMESH_ACME_DOMAIN = var.acme_domain },
    var.acme_email == "" ? {} : { KEYMESH_ACME_EMAIL = var.acme_email },
    var.acme_ca == "" ? {} : { KEYMESH_ACME_CA = var.acme_ca },
  )

  # The two servers every region runs. env is the whole of each server's
  # configuration: the KEYMESH_<FLAG> variables written to
  # /etc/keymesh/<service>.env at boot (flag --x-y is KEYMESH_X_Y). Values
  # may use ${PUBLIC_IP}, ${PRIVATE_IP}, ${NPROC} and ${REDIS_AUTH}, which the
  # boot script sets (written $${...} here). This is the one place that names
  # flags.
  #
  # KEYMESH_ADMIN: the admin endpoint (/healthz, /readyz, /metrics) has no
  # authentication, so it listens on the instance's private VPC address
  # only, not 0.0.0.0: the load balancers' health checks reach it there (and
  # the security group admits only them and admin_cidrs); the instance's
  # public address never serves it.
  admin_listen = "$${PRIVATE_IP}:${local.ports.admin}"

  redis_url = "rediss://:$${REDIS_AUTH}@${aws_elasticache_replication_group.registry.primary_endpoint_address}:${aws_elasticache_replication_group.registry.port}/0"

  # The instance mesh (README, "Anycast"): a Punch or relayed packet for a
  # peer leaves through the instance that holds the peer's flow. Each
  # instance binds the mesh to its private address and advertises its
  # public one, which AWS maps 1:1 onto it: the regions' VPCs are peered
  # with the primary only, so only public addresses reach across regions.
  # The instances of a service claim their numbers and find each other in
  # the shared Redis (--mesh-registry), whose list is also the only sources
  # their mesh accepts; every message must still carry the peer secret's
  # HMAC. No --mesh-allow: across regions the sources are public addresses
  # an auto-scaling group picks, not a range known here.
  mesh_env = {
    for name in ["rendezvous", "relay"] : name => {
      KEYMESH_MESH_LISTEN      = "$${PRIVATE_IP}:${local.ports["mesh_${name}"]}"
      KEYMESH_MESH_ADVERTISE   = "$${PUBLIC_IP}:${local.ports["mesh_${name}"]}"
      KEYMESH_MESH_REGISTRY    = local.redis_url
      KEYMESH_PEER_SECRET_FILE = "${local.secret_dir}/peer-secret"
    }
  }
  services = {
    rendezvous = {
      instance_type = var.rendezvous_instance_type
      unit          = file("${path.module}/../systemd/keymesh-rendezvous.service")
      secrets       = concat(["server-key", "cookie-secret", "turn-secret", "redis-auth", "peer-secret"], var.require_join_token ? ["join-token"] : [])
      ports = [
        { port = local.ports.rendezvous, protocol = "UDP" },
      ]
      # The mesh, from the other rendezvous instances' public addresses.
      direct = [
        { protocol = "udp", from = local.ports.mesh_rendezvous, to = local.ports.mesh_rendezvous },
      ]
      env = merge(var.require_join_token ? { KEYMESH_JOIN_TOKEN_FILE = "${local.secret_dir}/join-token" } : {}, local.mesh_env.rendezvous, {
        KEYMESH_LISTEN             = ":${local.ports.rendezvous}"
        KEYMESH_ADMIN              = local.admin_listen
        KEYMESH_KEY                = "${local.secret_dir}/server-key"
        KEYMESH_PUBLIC_ADDR        = local.public_host
        KEYMESH_REGISTRY           = "redis"
        KEYMESH_REDIS              = local.redis_url
        KEYMESH_RELAY              = join(",", [for ip in local.anycast_ips : "${ip}:${local.ports.relay}"])
        KEYMESH_STREAM_RELAY       = local.stream_relay_url
        KEYMESH_COOKIE_SECRET_FILE = "${local.secret_dir}/cookie-secret"
        KEYMESH_TURN_SECRET_FILE   = "${local.secret_dir}/turn-secret"
        KEYMESH_TURN_URI           = "turn:${local.public_host}:${local.ports.turn}"
        KEYMESH_REUSEPORT          = "$${NPROC}"
        KEYMESH_LOG_FORMAT         = "json"
        KEYMESH_LOG_LEVEL          = var.log_level
      })
    }
    relay = {
      instance_type = var.relay_instance_type
      unit          = file("${path.module}/../systemd/keymesh-relay.service")
      # redis-auth: the relays number themselves in the shared Redis.
      secrets = ["relay-key", "ticket-keys", "turn-secret", "redis-auth", "peer-secret"]
      ports = [
        { port = local.ports.relay, protocol = "UDP" },
        { port = local.ports.relay_tls, protocol = "TCP" },
        { port = local.ports.turn, protocol = "TCP_UDP" },
      ]
      # Reached on each instance's own public address, not through the
      # accelerator: TURN relayed addresses and stream-relay UDP presences,
      # the TLS stream relay, which listens on every address, and the mesh
      # from the other relays.
      direct = [
        { protocol = "udp", from = var.relay_direct_udp_ports.from, to = var.relay_direct_udp_ports.to },
        { protocol = "tcp", from = local.ports.relay_tls, to = local.ports.relay_tls },
        { protocol = "udp", from = local.ports.mesh_relay, to = local.ports.mesh_relay },
      ]
      env = merge(local.acme_env, local.mesh_env.relay, {
        KEYMESH_LISTEN              = ":${local.ports.relay}"
        KEYMESH_TLS_LISTEN          = ":${local.ports.relay_tls}"
        KEYMESH_ADMIN               = local.admin_listen
        KEYMESH_KEY                 = "${local.secret_dir}/relay-key"
        KEYMESH_TICKET_KEY_FILE     = "${local.secret_dir}/ticket-keys"
        KEYMESH_TURN_LISTEN         = ":${local.ports.turn}"
        KEYMESH_TURN_TCP_LISTEN     = ":${local.ports.turn}"
        KEYMESH_TURN_SECRET_FILE    = "${local.secret_dir}/turn-secret"
        KEYMESH_TURN_REALM          = var.acme_domain != "" ? var.acme_domain : var.deployment_name
        KEYMESH_TURN_RELAY_IP       = "0.0.0.0"
        KEYMESH_TURN_ADVERTISE_IP   = "$${PUBLIC_IP}"
        KEYMESH_STREAM_PRESENCE_IP  = "0.0.0.0"
        KEYMESH_STREAM_ADVERTISE_IP = "$${PUBLIC_IP}"
        KEYMESH_TURN_SOCKETS        = "$${NPROC}"
        KEYMESH_REUSEPORT           = "$${NPROC}"
        KEYMESH_LOG_FORMAT          = "json"
        KEYMESH_LOG_LEVEL           = var.log_level
      })
    }
  }

  # What every region module gets for each service.
  service_inputs = {
    for name, s in local.services : name => merge(s, {
      instance_profile = aws_iam_instance_profile.server[name].name
    })
  }

  # Accelerator listeners: one per service and IP protocol, with the ports
  # of that service that speak it.
  listeners = merge([
    for name, s in local.services : {
      for proto in ["UDP", "TCP"] : "${name}-${lower(proto)}" => {
        service  = name
        protocol = proto
        ports    = [for p in s.ports : p.port if p.protocol == proto || p.protocol == "TCP_UDP"]
      } if length([for p in s.ports : p.port if p.protocol == proto || p.protocol == "TCP_UDP"]) > 0
    }
  ]...)
}
