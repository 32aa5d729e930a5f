# One region module per slot of providers.tf: slot i runs var.regions[i]
# when the list is that long. Each region gets a VPC, a network load
# balancer and an auto scaling group for each of the two servers
# (rendezvous and relay), and, outside the primary region, a VPC peering to
# the primary region for Redis.

module "region_0" {
  source = "./modules/region"
  count  = 1

  providers = {
    aws         = aws.r0
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[0]
  vpc_cidr         = try(var.regions[0].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[0].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[0].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = null
  tags             = local.tags
}

module "region_1" {
  source = "./modules/region"
  count  = 1

  providers = {
    aws         = aws.r1
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[1]
  vpc_cidr         = try(var.regions[1].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[1].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[1].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = local.primary_network
  tags             = local.tags
}

module "region_2" {
  source = "./modules/region"
  count  = 1

  providers = {
    aws         = aws.r2
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[2]
  vpc_cidr         = try(var.regions[2].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[2].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[2].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = local.primary_network
  tags             = local.tags
}

module "region_3" {
  source = "./modules/region"
  count  = length(var.regions) > 3 ? 1 : 0

  providers = {
    aws         = aws.r3
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[3]
  vpc_cidr         = try(var.regions[3].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[3].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[3].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = local.primary_network
  tags             = local.tags
}

module "region_4" {
  source = "./modules/region"
  count  = length(var.regions) > 4 ? 1 : 0

  providers = {
    aws         = aws.r4
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[4]
  vpc_cidr         = try(var.regions[4].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[4].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[4].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = local.primary_network
  tags             = local.tags
}

module "region_5" {
  source = "./modules/region"
  count  = length(var.regions) > 5 ? 1 : 0

  providers = {
    aws         = aws.r5
    aws.primary = aws
  }

  name             = var.deployment_name
  region           = local.slot_regions[5]
  vpc_cidr         = try(var.regions[5].vpc_cidr, "")
  rendezvous       = merge(local.service_inputs.rendezvous, { instance_count = try(var.regions[5].rendezvous_count, 0) })
  relay            = merge(local.service_inputs.relay, { instance_count = try(var.regions[5].relay_count, 0) })
  architecture     = var.architecture
  admin_port       = local.ports.admin
  admin_cidrs      = var.admin_cidrs
  release          = local.release
  secret_prefix    = var.deployment_name
  secrets_revision = local.secrets_revision
  primary          = local.primary_network
  tags             = local.tags
}

locals {
  # The primary region's network, for the other regions' peering.
  primary_network = {
    region         = module.region_0[0].region
    vpc_id         = module.region_0[0].vpc_id
    vpc_cidr       = module.region_0[0].vpc_cidr
    route_table_id = module.region_0[0].route_table_id
  }

  # Every deployed region module by region name.
  deployed = {
    for m in concat(module.region_0, module.region_1, module.region_2, module.region_3, module.region_4, module.region_5) : m.region => m
  }
}
