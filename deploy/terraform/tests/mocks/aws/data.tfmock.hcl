# Values the mocked AWS provider returns for the data sources the
# deployment reads (terraform test, tests/*.tftest.hcl).

mock_data "aws_availability_zones" {
  defaults = {
    names = ["zone-a", "zone-b", "zone-c", "zone-d"]
  }
}

mock_data "aws_ssm_parameter" {
  defaults = {
    insecure_value = "ami-0123456789abcdef0"
  }
}

mock_data "aws_iam_policy_document" {
  defaults = {
    json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
  }
}

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
  }
}

mock_data "aws_partition" {
  defaults = {
    partition = "aws"
  }
}
