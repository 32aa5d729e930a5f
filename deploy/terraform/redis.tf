# The shared peer registry: one Redis replication group (primary and replica
# in two zones, automatic failover) in the primary region. Rendezvous
# instances in the other regions reach it over VPC peering. See README,
# "Why one Redis".

resource "aws_security_group" "redis" {
  name_prefix = "${var.deployment_name}-redis-"
  description = "keymesh registry: Redis from the regions' VPCs"
  vpc_id      = local.primary_network.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each = { for r in var.regions : r.name => r.vpc_cidr }

  security_group_id = aws_security_group.redis.id
  description       = "Redis from ${each.key}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_elasticache_subnet_group" "registry" {
  name       = "${var.deployment_name}-registry"
  subnet_ids = module.region_0[0].subnet_ids
}

resource "aws_elasticache_replication_group" "registry" {
  replication_group_id = "${var.deployment_name}-registry"
  description          = "keymesh peer registry (soft state) of deployment ${var.deployment_name}"

  engine               = "redis"
  engine_version       = "7.1"
  parameter_group_name = "default.redis7"
  node_type            = var.redis_node_type
  port                 = 6379

  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true

  subnet_group_name  = aws_elasticache_subnet_group.registry.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = random_password.redis_auth.result

  # The registry is soft state: peers re-register within one refresh
  # interval, so there is nothing to back up.
  snapshot_retention_limit = 0
  apply_immediately        = true
}
