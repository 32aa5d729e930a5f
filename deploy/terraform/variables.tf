variable "deployment_name" {
  description = "Name of this deployment: a prefix for every resource name and the Secrets Manager path. Lowercase letters, digits and dashes, 2 to 20 characters."
  type        = string
  default     = "keymesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.deployment_name))
    error_message = "deployment_name must be 2 to 20 lowercase letters, digits or dashes, starting with a letter (it prefixes load balancer names, which AWS limits to 32 characters)."
  }
}

variable "regions" {
  description = "The AWS regions to run in, the first one primary (it holds Redis, the release bucket and the secrets, replicated to the others). Each gets a VPC with the given CIDR, rendezvous_count rendezvous instances and relay_count relay instances. At least 3 regions, at most 6 (one provider slot each, see regions.tf)."
  type = list(object({
    name             = string
    vpc_cidr         = string
    rendezvous_count = optional(number, 2)
    relay_count      = optional(number, 2)
  }))

  validation {
    condition     = length(var.regions) >= 3 && length(var.regions) <= 6
    error_message = "regions must list at least 3 and at most 6 regions (regions.tf has 6 provider slots; add slots there for more)."
  }

  validation {
    condition     = length(distinct([for r in var.regions : r.name])) == length(var.regions)
    error_message = "regions must not name a region twice."
  }

  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", r.name))])
    error_message = "Each region name must be an AWS region code such as us-east-1 or eu-central-1."
  }

  validation {
    condition = alltrue([
      for r in var.regions : can(cidrhost(r.vpc_cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|2[0-2])$", r.vpc_cidr))
    ])
    error_message = "Each vpc_cidr must be an IPv4 CIDR from /16 to /22, such as 10.10.0.0/16 (each VPC is split into /26 or larger subnets)."
  }

  validation {
    condition     = length(distinct([for r in var.regions : cidrhost(r.vpc_cidr, 0)])) == length(var.regions)
    error_message = "Each region needs its own vpc_cidr: the VPCs are peered with the primary one, so their ranges must not overlap."
  }

  validation {
    condition = alltrue([
      for r in var.regions : r.rendezvous_count >= 1 && r.relay_count >= 1 && floor(r.rendezvous_count) == r.rendezvous_count && floor(r.relay_count) == r.relay_count
    ])
    error_message = "rendezvous_count and relay_count must be whole numbers of at least 1: every region runs both servers."
  }
}

variable "release_dir" {
  description = "Folder holding the release built by `make release`: keymesh-<binary>-linux-<arch> files, SHA256SUMS and VERSION. Relative paths are taken from the folder terraform runs in."
  type        = string
  default     = "../../dist"

  validation {
    condition     = fileexists("${var.release_dir}/SHA256SUMS") && fileexists("${var.release_dir}/VERSION")
    error_message = "release_dir has no SHA256SUMS or VERSION: run `make release` at the repository root first, or point release_dir at a release folder."
  }
}

variable "architecture" {
  description = "CPU architecture of the instances: arm64 (Graviton, the default) or x86_64. It picks the Amazon Linux 2023 image and the release binaries."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "rendezvous_instance_type" {
  description = "EC2 instance type of the rendezvous servers; it must match architecture."
  type        = string
  default     = "c7g.medium"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.rendezvous_instance_type))
    error_message = "rendezvous_instance_type must be an EC2 instance type such as c7g.medium."
  }
}

variable "relay_instance_type" {
  description = "EC2 instance type of the relay servers; it must match architecture. Relays move packets: prefer network-optimised types."
  type        = string
  default     = "c7gn.medium"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.relay_instance_type))
    error_message = "relay_instance_type must be an EC2 instance type such as c7gn.medium."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type of the shared peer registry (Redis, in the primary region)."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must be an ElastiCache node type such as cache.t4g.small."
  }
}

variable "acme_domain" {
  description = "DNS name of the deployment: point its A records at the accelerator's addresses (output anycast_ips) and the relays get certificates for the stream relay (TCP 443) by ACME, and peers are given this name. Empty: the first anycast address, and the stream relay's self-signed certificate is pinned by its key."
  type        = string
  default     = ""

  validation {
    condition     = var.acme_domain == "" || can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.acme_domain))
    error_message = "acme_domain must be empty or a lowercase DNS name such as relay.example.com."
  }
}

variable "acme_email" {
  description = "Contact address given to the ACME CA. Used only with acme_domain."
  type        = string
  default     = ""

  validation {
    condition     = var.acme_email == "" || can(regex("^[^@\\s]+@[^@\\s]+$", var.acme_email))
    error_message = "acme_email must be empty or an email address."
  }
}

variable "acme_ca" {
  description = "ACME directory URL. Empty: the servers' default CA (Let's Encrypt production)."
  type        = string
  default     = ""

  validation {
    condition     = var.acme_ca == "" || startswith(var.acme_ca, "https://")
    error_message = "acme_ca must be empty or an https:// ACME directory URL."
  }
}

variable "require_join_token" {
  description = "Make the rendezvous servers refuse registrations without the join token (output join_token; peers give it with --join-token-file). On by default: without it, anyone who can make a key registers, gets relay tickets and TURN credentials."
  type        = bool
  default     = true
}

variable "admin_cidrs" {
  description = "IPv4 CIDRs allowed to reach the servers' admin port (/healthz, /readyz, /metrics) directly, for monitoring. The load balancers' health checks are always allowed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && strcontains(c, "/")])
    error_message = "Each admin_cidrs entry must be an IPv4 CIDR such as 192.0.2.0/24."
  }
}

variable "relay_direct_udp_ports" {
  description = "UDP port range open on each relay instance's own public address (not through the accelerator): TURN relayed addresses and the stream relay's UDP presences bind there. The default is Linux's ephemeral port range and above."
  type = object({
    from = number
    to   = number
  })
  default = {
    from = 32768
    to   = 65535
  }

  validation {
    condition     = var.relay_direct_udp_ports.from >= 1024 && var.relay_direct_udp_ports.from <= var.relay_direct_udp_ports.to && var.relay_direct_udp_ports.to <= 65535
    error_message = "relay_direct_udp_ports must be a range within 1024-65535 with from <= to."
  }
}

variable "ticket_key_generation" {
  description = "Generation of the relay ticket key. Raise it by one to rotate: relays then seal with a new key and still accept tickets sealed under the previous generation's key."
  type        = number
  default     = 1

  validation {
    condition     = var.ticket_key_generation >= 1 && floor(var.ticket_key_generation) == var.ticket_key_generation
    error_message = "ticket_key_generation must be a whole number of at least 1."
  }
}

variable "log_level" {
  description = "Log level of the servers: debug, info, warn or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warn or error."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}
