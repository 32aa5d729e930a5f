# The release built by `make release`, uploaded to a private bucket in the
# primary region under releases/<version>/. Instances fetch their binary at
# boot and check it against SHA256SUMS. A new version changes the launch
# templates, and the auto scaling groups replace their instances in a
# rolling refresh.

locals {
  release_version = trimspace(file("${var.release_dir}/VERSION"))
  release_prefix  = "releases/${local.release_version}"
  release_files   = setunion(fileset(var.release_dir, "keymesh-*-linux-*"), ["SHA256SUMS", "VERSION"])

  release = {
    bucket  = aws_s3_bucket.release.id
    region  = local.primary_region
    prefix  = local.release_prefix
    version = local.release_version
    # Known once the files are uploaded, so no instance boots before.
    revision = sha256(join(",", [for k in sort(keys(aws_s3_object.release)) : aws_s3_object.release[k].etag]))
  }
}

resource "aws_s3_bucket" "release" {
  bucket_prefix = "${var.deployment_name}-release-"
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "release" {
  bucket = aws_s3_bucket.release.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "release" {
  bucket = aws_s3_bucket.release.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_object" "release" {
  for_each = local.release_files

  bucket      = aws_s3_bucket.release.id
  key         = "${local.release_prefix}/${each.value}"
  source      = "${var.release_dir}/${each.value}"
  source_hash = filemd5("${var.release_dir}/${each.value}")
}
