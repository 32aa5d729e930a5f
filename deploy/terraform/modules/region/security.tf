# Two security groups per service. The load balancer's admits the service
# ports from anywhere (the accelerator keeps client addresses, so traffic
# arrives from the clients' own addresses). The instances' admits the service
# ports and the admin port only from their load balancer's group (and the
# admin port from admin_cidrs), plus the service's direct ports.

resource "aws_security_group" "lb" {
  for_each = local.services

  name_prefix = "${var.name}-${each.key}-lb-"
  description = "keymesh ${each.key} load balancer"
  vpc_id      = aws_vpc.this.id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "instance" {
  for_each = local.services

  name_prefix = "${var.name}-${each.key}-"
  description = "keymesh ${each.key} instances"
  vpc_id      = aws_vpc.this.id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_service" {
  for_each = local.port_rules

  security_group_id = aws_security_group.lb[each.value.service].id
  description       = "${each.value.service} ${each.value.protocol}/${each.value.port} from clients"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "lb_service" {
  for_each = local.port_rules

  security_group_id            = aws_security_group.lb[each.value.service].id
  description                  = "${each.value.service} ${each.value.protocol}/${each.value.port} to instances"
  referenced_security_group_id = aws_security_group.instance[each.value.service].id
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "lb_health" {
  for_each = local.services

  security_group_id            = aws_security_group.lb[each.key].id
  description                  = "health checks to the admin port"
  referenced_security_group_id = aws_security_group.instance[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
}

resource "aws_vpc_security_group_ingress_rule" "instance_service" {
  for_each = local.port_rules

  security_group_id            = aws_security_group.instance[each.value.service].id
  description                  = "${each.value.service} ${each.value.protocol}/${each.value.port} from the load balancer"
  referenced_security_group_id = aws_security_group.lb[each.value.service].id
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_ingress_rule" "instance_health" {
  for_each = local.services

  security_group_id            = aws_security_group.instance[each.key].id
  description                  = "admin port (/healthz) from the load balancer"
  referenced_security_group_id = aws_security_group.lb[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
}

resource "aws_vpc_security_group_ingress_rule" "instance_admin" {
  for_each = {
    for pair in setproduct(keys(local.services), var.admin_cidrs) : "${pair[0]}-${pair[1]}" => {
      service = pair[0]
      cidr    = pair[1]
    }
  }

  security_group_id = aws_security_group.instance[each.value.service].id
  description       = "admin port from ${each.value.cidr}"
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
}

resource "aws_vpc_security_group_ingress_rule" "instance_direct" {
  for_each = merge([
    for name, s in local.services : {
      for d in s.direct : "${name}-${d.protocol}-${d.from}-${d.to}" => merge(d, { service = name })
    }
  ]...)

  security_group_id = aws_security_group.instance[each.value.service].id
  description       = "${each.value.service} ${each.value.protocol}/${each.value.from}-${each.value.to} direct"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = each.value.protocol
  from_port         = each.value.from
  to_port           = each.value.to
}

resource "aws_vpc_security_group_egress_rule" "instance_all" {
  for_each = local.services

  security_group_id = aws_security_group.instance[each.key].id
  description       = "everything out (peers, Redis, AWS APIs)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
