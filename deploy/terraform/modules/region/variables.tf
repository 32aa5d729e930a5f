variable "name" {
  description = "Deployment name: the prefix of resource names."
  type        = string
}

variable "region" {
  description = "The AWS region this module runs in (the region of its default provider)."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of this region's VPC, /16 to /22; it must not overlap another region's."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be an IPv4 CIDR such as 10.10.0.0/16."
  }
}

variable "rendezvous" {
  description = "The rendezvous server group: instance type and count, instance profile, systemd unit text, secrets to fetch, load-balanced ports, ports open directly on the instances, and its KEYMESH_* environment."
  type = object({
    instance_type    = string
    instance_count   = number
    instance_profile = string
    unit             = string
    secrets          = list(string)
    ports            = list(object({ port = number, protocol = string }))
    direct           = list(object({ protocol = string, from = number, to = number }))
    env              = map(string)
  })

  validation {
    condition     = var.rendezvous.instance_count >= 1
    error_message = "Every region runs at least one rendezvous instance."
  }
}

variable "relay" {
  description = "The relay server group, described as for rendezvous."
  type = object({
    instance_type    = string
    instance_count   = number
    instance_profile = string
    unit             = string
    secrets          = list(string)
    ports            = list(object({ port = number, protocol = string }))
    direct           = list(object({ protocol = string, from = number, to = number }))
    env              = map(string)
  })

  validation {
    condition     = var.relay.instance_count >= 1
    error_message = "Every region runs at least one relay instance."
  }
}

variable "architecture" {
  description = "Instance CPU architecture: arm64 or x86_64."
  type        = string

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "admin_port" {
  description = "TCP port of the servers' admin HTTP endpoint (/healthz); the load balancers' health checks use it."
  type        = number
}

variable "admin_cidrs" {
  description = "IPv4 CIDRs that may reach the admin port directly (monitoring)."
  type        = list(string)
  default     = []
}

variable "release" {
  description = "Where the release binaries are: S3 bucket, its region, key prefix, version, and a revision that changes with the uploaded files."
  type = object({
    bucket   = string
    region   = string
    prefix   = string
    version  = string
    revision = string
  })
}

variable "secret_prefix" {
  description = "Secrets Manager name prefix: secret <secret_prefix>/<name> is written to /etc/keymesh/secrets/<name>."
  type        = string
}

variable "secrets_revision" {
  description = "Changes whenever a secret's value does, so instances are replaced to read the new value."
  type        = string
}

variable "primary" {
  description = "The primary region's network, to peer with (it holds Redis); null in the primary region itself."
  type = object({
    region         = string
    vpc_id         = string
    vpc_cidr       = string
    route_table_id = string
  })
  default = null
}

variable "tags" {
  description = "Tags for the instances and auto scaling groups (the providers' default_tags cover the rest)."
  type        = map(string)
  default     = {}
}
