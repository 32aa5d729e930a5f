# A network load balancer per service, the accelerator's endpoint in this
# region. It has security groups and no TLS listener (TLS ends on the
# instances), which the accelerator needs to keep client addresses, and its
# target groups keep them too (instance targets). Targets are checked with
# HTTP GET /healthz on the admin port; the accelerator follows these checks.

resource "aws_lb" "this" {
  for_each = local.services

  name                             = substr("${var.name}-${each.key}", 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  ip_address_type                  = "ipv4"
  subnets                          = [for s in aws_subnet.public : s.id]
  security_groups                  = [aws_security_group.lb[each.key].id]
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "this" {
  for_each = local.lb_ports

  port                 = each.value.port
  protocol             = each.value.protocol
  vpc_id               = aws_vpc.this.id
  target_type          = "instance"
  preserve_client_ip   = "true"
  deregistration_delay = 30

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.admin_port)
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }

  tags = {
    Name = "${var.name}-${each.key}"
  }
}

resource "aws_lb_listener" "this" {
  for_each = local.lb_ports

  load_balancer_arn = aws_lb.this[each.value.service].arn
  port              = each.value.port
  protocol          = each.value.protocol

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }
}
