# Offline tests of the whole deployment with mocked providers: no AWS
# account and no credentials. Run from deploy/terraform:
#   terraform init -backend=false && terraform test

mock_provider "aws" {
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "global_accelerator"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r0"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r1"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r2"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r3"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r4"
  source = "./tests/mocks/aws"
}

mock_provider "aws" {
  alias  = "r5"
  source = "./tests/mocks/aws"
}

mock_provider "random" {}

mock_provider "tls" {}

# The server key's public half: Ed25519 from the seed 00 01 02 ... 1f,
# whose peer ID internal/crypto gives as aoqqpp7t...
override_resource {
  target = tls_private_key.server
  values = {
    public_key_openssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4\n"
  }
}

# The relays' key: the same test key, so the same peer ID.
override_resource {
  target = tls_private_key.relay
  values = {
    public_key_openssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4\n"
  }
}

override_resource {
  target = random_password.redis_auth
  values = {
    result = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL"
  }
}

override_resource {
  target = random_bytes.ticket_key
  values = {
    hex    = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    base64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
  }
}

override_resource {
  target = aws_globalaccelerator_accelerator.this
  values = {
    dns_name = "a0123456789abcdef.awsglobalaccelerator.com"
    ip_sets = [{
      ip_family    = "IPv4"
      ip_addresses = ["192.0.2.1", "192.0.2.2"]
    }]
  }
}

variables {
  release_dir = "tests/fixtures/release"
  regions = [
    { name = "us-east-1", vpc_cidr = "10.10.0.0/16" },
    { name = "eu-west-1", vpc_cidr = "10.20.0.0/16", relay_count = 3 },
    { name = "ap-southeast-1", vpc_cidr = "10.30.0.0/16", rendezvous_count = 1, relay_count = 1 },
  ]
}

run "three_regions" {
  command = apply

  assert {
    condition     = output.connect_string == "192.0.2.1:3478#aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a"
    error_message = "connect_string is ${output.connect_string}"
  }

  assert {
    condition     = output.stream_relay_url == "wss://192.0.2.1:443/v1/tunnel#aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a"
    error_message = "stream_relay_url is ${output.stream_relay_url}"
  }

  assert {
    condition     = length(output.connect_strings) == 2
    error_message = "want a connect string per anycast address"
  }

  assert {
    condition     = length(module.region_0) == 1 && length(module.region_1) == 1 && length(module.region_2) == 1 && length(module.region_3) == 0 && length(module.region_4) == 0 && length(module.region_5) == 0
    error_message = "three regions must use exactly the first three region slots"
  }

  assert {
    condition     = [module.region_0[0].region, module.region_1[0].region, module.region_2[0].region] == ["us-east-1", "eu-west-1", "ap-southeast-1"]
    error_message = "region slots are not in var.regions order"
  }

  assert {
    condition     = alltrue([for r, m in output.autoscaling_groups : length(m) == 2 && contains(keys(m), "rendezvous") && contains(keys(m), "relay")])
    error_message = "every region must run a rendezvous and a relay group"
  }

  assert {
    condition     = length(aws_globalaccelerator_listener.this) == 3 && length(aws_globalaccelerator_endpoint_group.this) == 9
    error_message = "want 3 listeners (rendezvous UDP, relay UDP, relay TCP) with an endpoint group in each of the 3 regions"
  }

  assert {
    condition     = alltrue([for g in aws_globalaccelerator_endpoint_group.this : g.health_check_path == "/healthz" && g.health_check_port == 9090])
    error_message = "endpoint groups must check /healthz on the admin port"
  }

  assert {
    condition     = alltrue([for s in aws_secretsmanager_secret.this : length(s.replica) == 2])
    error_message = "every secret must be replicated to the two other regions"
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.redis) == 3
    error_message = "Redis must admit each region's VPC"
  }

  assert {
    condition     = length(regexall("\n", aws_secretsmanager_secret_version.this["ticket-keys"].secret_string)) == 2
    error_message = "generation 1 has a comment line and one key line"
  }

  assert {
    condition     = aws_s3_object.release["VERSION"].key == "releases/v0.0.0-test/VERSION"
    error_message = "the release goes under releases/<version>/"
  }
}

run "four_regions" {
  command = apply

  variables {
    regions = [
      { name = "us-east-1", vpc_cidr = "10.10.0.0/16" },
      { name = "eu-west-1", vpc_cidr = "10.20.0.0/16" },
      { name = "ap-southeast-1", vpc_cidr = "10.30.0.0/16" },
      { name = "sa-east-1", vpc_cidr = "10.40.0.0/16" },
    ]
  }

  assert {
    condition     = length(module.region_3) == 1 && module.region_3[0].region == "sa-east-1" && length(module.region_4) == 0
    error_message = "the fourth region must use slot 3"
  }

  assert {
    condition     = length(aws_globalaccelerator_endpoint_group.this) == 12
    error_message = "want 3 listeners x 4 regions endpoint groups"
  }
}

run "ticket_key_rotation" {
  command = apply

  variables {
    ticket_key_generation = 2
  }

  assert {
    condition     = length(regexall("(?m)^[0-9]+ [0-9a-f]{64}$", aws_secretsmanager_secret_version.this["ticket-keys"].secret_string)) == 2
    error_message = "after a rotation the ticket key file holds the new and the previous key"
  }

  assert {
    condition     = startswith(split("\n", aws_secretsmanager_secret_version.this["ticket-keys"].secret_string)[1], "2 ")
    error_message = "the new generation's key must come first (it seals)"
  }
}

run "too_few_regions" {
  command = plan

  variables {
    regions = [
      { name = "us-east-1", vpc_cidr = "10.10.0.0/16" },
      { name = "eu-west-1", vpc_cidr = "10.20.0.0/16" },
    ]
  }

  expect_failures = [var.regions]
}

run "overlapping_vpcs" {
  command = plan

  variables {
    regions = [
      { name = "us-east-1", vpc_cidr = "10.10.0.0/16" },
      { name = "eu-west-1", vpc_cidr = "10.10.0.0/16" },
      { name = "ap-southeast-1", vpc_cidr = "10.30.0.0/16" },
    ]
  }

  expect_failures = [var.regions]
}

run "zero_relays" {
  command = plan

  variables {
    regions = [
      { name = "us-east-1", vpc_cidr = "10.10.0.0/16" },
      { name = "eu-west-1", vpc_cidr = "10.20.0.0/16", relay_count = 0 },
      { name = "ap-southeast-1", vpc_cidr = "10.30.0.0/16" },
    ]
  }

  expect_failures = [var.regions]
}

run "missing_release" {
  command = plan

  variables {
    release_dir = "tests/fixtures/no-such-release"
  }

  expect_failures = [var.release_dir]
}
