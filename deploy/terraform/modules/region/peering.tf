# Outside the primary region: a VPC peering with the primary region's VPC,
# so rendezvous instances here reach Redis on its private address.

resource "aws_vpc_peering_connection" "primary" {
  count = var.primary == null ? 0 : 1

  vpc_id      = aws_vpc.this.id
  peer_vpc_id = var.primary.vpc_id
  peer_region = var.primary.region

  tags = {
    Name = "${var.name}-${var.region}-to-${var.primary.region}"
  }
}

resource "aws_vpc_peering_connection_accepter" "primary" {
  provider = aws.primary
  count    = length(aws_vpc_peering_connection.primary)

  vpc_peering_connection_id = aws_vpc_peering_connection.primary[0].id
  auto_accept               = true

  tags = {
    Name = "${var.name}-${var.primary.region}-to-${var.region}"
  }
}

resource "aws_route" "to_primary" {
  count = length(aws_vpc_peering_connection.primary)

  route_table_id            = aws_route_table.public.id
  destination_cidr_block    = var.primary.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.primary[0].id
}

resource "aws_route" "from_primary" {
  provider = aws.primary
  count    = length(aws_vpc_peering_connection.primary)

  route_table_id            = var.primary.route_table_id
  destination_cidr_block    = var.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.primary[0].id
}
