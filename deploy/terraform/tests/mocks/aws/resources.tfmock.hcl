# Identifiers in the form the AWS provider checks when another resource
# takes them (a mock's default is a random string).

mock_resource "aws_lb" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/keymesh/0123456789abcdef"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/keymesh/0123456789abcdef"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    latest_version = 1
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    id  = "keymesh-release-0123"
    arn = "arn:aws:s3:::keymesh-release-0123"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn  = "arn:aws:iam::123456789012:role/keymesh-server"
    name = "keymesh-server"
  }
}

mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:keymesh/secret-AbCdEf"
  }
}

mock_resource "aws_globalaccelerator_accelerator" {
  defaults = {
    id = "arn:aws:globalaccelerator::123456789012:accelerator/0123abcd-0123-0123-0123-0123456789ab"
  }
}

mock_resource "aws_globalaccelerator_listener" {
  defaults = {
    id = "arn:aws:globalaccelerator::123456789012:accelerator/0123abcd-0123-0123-0123-0123456789ab/listener/0123abcd"
  }
}

mock_resource "aws_vpc" {
  defaults = {
    id = "vpc-0123456789abcdef0"
  }
}

mock_resource "aws_security_group" {
  defaults = {
    id = "sg-0123456789abcdef0"
  }
}

mock_resource "aws_vpc_peering_connection" {
  defaults = {
    id = "pcx-0123456789abcdef0"
  }
}
