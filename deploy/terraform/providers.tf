# The default provider works in the primary region: Redis, the release
# bucket, the secrets (replicated to the other regions) and IAM.
provider "aws" {
  region = local.primary_region

  default_tags {
    tags = local.tags
  }
}

# The Global Accelerator API is served from us-west-2 only, whatever the
# regions of the endpoints.
provider "aws" {
  alias  = "global_accelerator"
  region = "us-west-2"

  default_tags {
    tags = local.tags
  }
}

# One provider per region slot: Terraform cannot pass a computed provider to
# a module, so regions.tf calls the region module once per slot. A slot past
# the end of var.regions points at the primary region and its module has
# count = 0.
locals {
  slot_regions = [for i in range(6) : try(var.regions[i].name, local.primary_region)]
}

provider "aws" {
  alias  = "r0"
  region = local.slot_regions[0]

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "r1"
  region = local.slot_regions[1]

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "r2"
  region = local.slot_regions[2]

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "r3"
  region = local.slot_regions[3]

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "r4"
  region = local.slot_regions[4]

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "r5"
  region = local.slot_regions[5]

  default_tags {
    tags = local.tags
  }
}
