output "region" {
  description = "The region of this module."
  value       = var.region
}

output "vpc_id" {
  description = "ID of the region's VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "IPv4 CIDR of the region's VPC."
  value       = aws_vpc.this.cidr_block
}

output "route_table_id" {
  description = "ID of the public subnets' route table."
  value       = aws_route_table.public.id
}

output "subnet_ids" {
  description = "IDs of the public subnets, one per zone."
  value       = [for s in aws_subnet.public : s.id]
}

output "load_balancer_arns" {
  description = "Network load balancer ARN by service: the accelerator's endpoints."
  value       = { for k, lb in aws_lb.this : k => lb.arn }
}

output "autoscaling_group_names" {
  description = "Auto scaling group name by service."
  value       = { for k, g in aws_autoscaling_group.this : k => g.name }
}
