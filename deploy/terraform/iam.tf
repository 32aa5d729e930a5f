# One instance role per server: it may read that server's secrets (in any
# region, for the replicas) and the release, and be managed through SSM
# Session Manager (no SSH port is open).

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "server" {
  for_each = local.services

  name_prefix        = "${var.deployment_name}-${each.key}-"
  description        = "keymesh ${each.key} instances of deployment ${var.deployment_name}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

data "aws_iam_policy_document" "server" {
  for_each = local.services

  statement {
    sid     = "ReadOwnSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      for s in each.value.secrets :
      "arn:${data.aws_partition.current.partition}:secretsmanager:*:${data.aws_caller_identity.current.account_id}:secret:${var.deployment_name}/${s}-*"
    ]
  }

  statement {
    sid       = "ReadRelease"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.release.arn}/releases/*"]
  }
}

resource "aws_iam_role_policy" "server" {
  for_each = local.services

  name   = "keymesh-${each.key}"
  role   = aws_iam_role.server[each.key].id
  policy = data.aws_iam_policy_document.server[each.key].json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each = local.services

  role       = aws_iam_role.server[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "server" {
  for_each = local.services

  name_prefix = "${var.deployment_name}-${each.key}-"
  role        = aws_iam_role.server[each.key].name
}
