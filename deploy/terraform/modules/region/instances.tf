# Each service runs in an auto scaling group of Amazon Linux 2023 instances.
# user_data (templates/user_data.sh.tftpl) installs the release binary and the
# systemd unit, fetches the secrets and writes the environment file. A change
# to any of them (new release, new secret, new setting) makes a new launch
# template version, and the group replaces its instances in a rolling
# refresh that keeps half of them in service.

data "aws_ssm_parameter" "ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  goarch = var.architecture == "arm64" ? "arm64" : "amd64"
}

resource "aws_launch_template" "this" {
  for_each = local.services

  name_prefix            = "${var.name}-${each.key}-"
  description            = "keymesh ${each.key} ${var.release.version}"
  image_id               = data.aws_ssm_parameter.ami.insecure_value
  instance_type          = each.value.instance_type
  update_default_version = true

  user_data = base64encode(templatefile("${path.module}/templates/user_data.sh.tftpl", {
    service          = each.key
    goarch           = local.goarch
    region           = var.region
    release          = var.release
    secret_prefix    = var.secret_prefix
    secrets          = each.value.secrets
    secrets_revision = var.secrets_revision
    env              = each.value.env
    unit             = each.value.unit
  }))

  iam_instance_profile {
    name = each.value.instance_profile
  }

  network_interfaces {
    associate_public_ip_address = true
    delete_on_termination       = true
    security_groups             = [aws_security_group.instance[each.key].id]
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags = merge(var.tags, {
      Name    = "${var.name}-${each.key}"
      Service = each.key
    })
  }
}

resource "aws_autoscaling_group" "this" {
  for_each = local.services

  name_prefix               = "${var.name}-${each.key}-"
  min_size                  = each.value.instance_count
  max_size                  = each.value.instance_count * 2
  desired_capacity          = each.value.instance_count
  vpc_zone_identifier       = [for s in aws_subnet.public : s.id]
  target_group_arns         = [for k, tg in aws_lb_target_group.this : tg.arn if local.lb_ports[k].service == each.key]
  health_check_type         = "ELB"
  health_check_grace_period = 180

  launch_template {
    id      = aws_launch_template.this[each.key].id
    version = aws_launch_template.this[each.key].latest_version
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, {
      Name    = "${var.name}-${each.key}"
      Service = each.key
    })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
  }
}
