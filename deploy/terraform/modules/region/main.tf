locals {
  # The two servers every region runs. Load balancers, security groups,
  # launch templates and auto scaling groups are made for each.
  services = {
    rendezvous = var.rendezvous
    relay      = var.relay
  }

  # One load balancer listener and target group per service and port. A port
  # that speaks both TCP and UDP is a single TCP_UDP listener.
  lb_ports = merge([
    for name, s in local.services : {
      for p in s.ports : "${name}-${p.port}" => {
        service  = name
        port     = p.port
        protocol = p.protocol
      }
    }
  ]...)

  # One security group rule per service, port and IP protocol ("TCP_UDP"
  # splits into tcp and udp).
  port_rules = merge([
    for k, p in local.lb_ports : {
      for proto in split("_", lower(p.protocol)) : "${k}-${proto}" => {
        service  = p.service
        port     = p.port
        protocol = proto
      }
    }
  ]...)
}
