# One set of anycast addresses for every region: a Global Accelerator with a
# listener per service and protocol, and in each listener one endpoint group
# per region whose endpoint is that region's network load balancer for the
# service. The accelerator keeps the client's address (the rendezvous must
# see a peer's real reflexive address) and sends a client to the same
# endpoint for all its flows (SOURCE_IP affinity).

resource "aws_globalaccelerator_accelerator" "this" {
  provider = aws.global_accelerator

  name            = var.deployment_name
  ip_address_type = "IPV4"
  enabled         = true
}

resource "aws_globalaccelerator_listener" "this" {
  provider = aws.global_accelerator
  for_each = local.listeners

  accelerator_arn = aws_globalaccelerator_accelerator.this.id
  protocol        = each.value.protocol
  client_affinity = "SOURCE_IP"

  dynamic "port_range" {
    for_each = each.value.ports
    content {
      from_port = port_range.value
      to_port   = port_range.value
    }
  }
}

locals {
  # "<listener>/<region>" for every listener and region.
  endpoint_groups = merge([
    for lk, l in local.listeners : {
      for r in local.region_names : "${lk}/${r}" => {
        listener = lk
        service  = l.service
        region   = r
      }
    }
  ]...)
}

resource "aws_globalaccelerator_endpoint_group" "this" {
  provider = aws.global_accelerator
  for_each = local.endpoint_groups

  listener_arn          = aws_globalaccelerator_listener.this[each.value.listener].id
  endpoint_group_region = each.value.region

  # For load balancer endpoints the accelerator goes by the load balancer's
  # own target health checks, which are the same: HTTP GET /healthz on the
  # admin port (modules/region/load_balancers.tf).
  health_check_protocol         = "HTTP"
  health_check_port             = local.ports.admin
  health_check_path             = "/healthz"
  health_check_interval_seconds = 10
  threshold_count               = 3
  traffic_dial_percentage       = 100

  endpoint_configuration {
    endpoint_id                    = local.deployed[each.value.region].load_balancer_arns[each.value.service]
    weight                         = 128
    client_ip_preservation_enabled = true
  }
}
