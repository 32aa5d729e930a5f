# keymesh build, release and test entry points.
#
#   make build     the three binaries for this machine, in bin/
#   make release   static binaries for linux/amd64 and linux/arm64 in dist/,
#                  the peer also for darwin/arm64, darwin/amd64 and
#                  windows/amd64 (.exe), with SHA256SUMS and VERSION
#                  (deploy/terraform uploads the linux ones)
#   make test      every check and test (scripts/test.sh, as CI runs it)
#   make demo      the end-to-end demo (scripts/demo.sh)
#   make docker    container images (needs a Docker engine)
#   make clean     remove bin/ and dist/
#
# VERSION defaults to `git describe`; override it: make release VERSION=v1.2.3

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
MODULE    := github.com/keymesh/keymesh
CMDS      := rendezvous relay peer
PLATFORMS := linux/amd64 linux/arm64
# The peer runs on workstations too; the servers only on Linux.
PEER_PLATFORMS := darwin/arm64 darwin/amd64 windows/amd64
LDFLAGS   := -s -w -X $(MODULE)/internal/obs.version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'
SHA256SUM := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo 'shasum -a 256')

BINS     := $(addprefix bin/,$(CMDS))
# dist/keymesh-<cmd>-<os>-<arch> for every command and platform.
# Windows binaries end in .exe.
exe = $(if $(filter windows/%,$(1)),.exe)
RELEASES := $(foreach p,$(PLATFORMS),$(foreach c,$(CMDS),dist/keymesh-$(c)-$(subst /,-,$(p)))) \
	$(foreach p,$(PEER_PLATFORMS),dist/keymesh-peer-$(subst /,-,$(p))$(call exe,$(p)))

.DEFAULT_GOAL := build
.PHONY: build release test demo docker clean help FORCE

help:
	@sed -n 's/^#   //p' Makefile

build: $(BINS)

# Go's build cache decides what to rebuild, so these always run go build.
bin/%: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/$*

release: $(RELEASES)
	cd dist && rm -f SHA256SUMS && $(SHA256SUM) $(notdir $(RELEASES)) > SHA256SUMS
	printf '%s\n' '$(VERSION)' > dist/VERSION
	@echo "dist/: $(words $(RELEASES)) binaries of $(VERSION), SHA256SUMS, VERSION"

# % is <cmd>-<os>-<arch>[.exe]; commands have no dash in their names.
dist/keymesh-%: FORCE
	CGO_ENABLED=0 GOOS=$(word 2,$(subst -, ,$(basename $*))) GOARCH=$(word 3,$(subst -, ,$(basename $*))) \
		$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/$(word 1,$(subst -, ,$(basename $*)))

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

docker:
	for c in $(CMDS); do \
		docker build --build-arg VERSION=$(VERSION) --target $$c -t keymesh-$$c:$(VERSION) . || exit 1; \
	done

clean:
	rm -rf bin dist

FORCE:
