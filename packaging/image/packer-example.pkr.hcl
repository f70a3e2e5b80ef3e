# Example: bake rolecall into an EC2 AMI with Packer (amazon-ebs builder).
# Not used by the build; copy it next to your image definition and adjust.
#
#   packaging/build.sh                      # -> rolecall_<ver>-1_amd64.deb
#   packer init packaging/image/packer-example.pkr.hcl
#   packer build -var deb=/path/to/rolecall_<ver>-1_amd64.deb \
#                -var map_url=s3://fleet-config/rolemap.toml \
#                packaging/image/packer-example.pkr.hcl
#
# The instances launched from the AMI need an instance profile that may
# s3:GetObject the map (and nothing in the image holds credentials).

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "deb" {
  type        = string
  description = "Path of the rolecall .deb built by packaging/build.sh"
}

variable "map_url" {
  type        = string
  description = "Role map location: s3://bucket/key, https://host/path or file:///path"
}

variable "verify_key" {
  type        = string
  default     = ""
  description = "Optional public key file for map signatures (copied to /etc/rolecall/map.pub)"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

source "amazon-ebs" "lamp" {
  region        = var.region
  instance_type = "t3.small"
  ssh_username  = "admin"
  ami_name      = "lamp-rolecall-{{timestamp}}"

  # IMDSv2 only: rolecall's identity source refuses IMDSv1, and so should the
  # instances launched from this image.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
}

build {
  sources = ["source.amazon-ebs.lamp"]

  # The services rolecall configures. Install them here, so first boot only
  # renders configuration (the unit orders itself Before= them).
  provisioner "shell" {
    inline = [
      "sudo apt-get update",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y apache2 mariadb-server memcached munin-node",
    ]
  }

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/rolecall.deb"
  }

  provisioner "file" {
    source      = "packaging/image/bake.sh"
    destination = "/tmp/bake.sh"
  }

  # An empty file when no key is given, so the upload step never fails.
  provisioner "file" {
    content     = var.verify_key == "" ? "" : file(var.verify_key)
    destination = "/tmp/map.pub"
  }

  # Installs the package, writes /etc/rolecall/agent.toml, enables
  # rolecall.service and leaves /var/lib/rolecall empty. It does not start the
  # agent: the build instance is not in the role map and must not cache it.
  provisioner "shell" {
    environment_vars = [
      "MAP_URL=${var.map_url}",
      "WITH_KEY=${var.verify_key == "" ? "no" : "yes"}",
    ]
    inline = [
      "set -eu",
      "key_opt=''; if [ \"$WITH_KEY\" = yes ]; then key_opt='--verify-key /tmp/map.pub'; fi",
      "sudo bash /tmp/bake.sh --package /tmp/rolecall.deb --map-url \"$MAP_URL\" --poll-interval 30s --jitter 10s $key_opt",
      "rm -f /tmp/rolecall.deb /tmp/bake.sh /tmp/map.pub",
    ]
  }
}
