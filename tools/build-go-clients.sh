#!/usr/bin/env bash
# Builds Firecracker's own Go clients, unchanged, into build/clients:
# firectl, its command-line client, with the Firecracker Go SDK it is
# written on (test_firectl.py), and the SDK's own test suite as one test
# binary, go-sdk.test (test_go_sdk.py runs its VM tests on Ember).
#
#   tools/build-go-clients.sh [OUT_DIR]
#
# Their sources are not in Debian and this project vendors no one else's
# code, so they come from git repositories on this machine:
#   FIRECTL_GIT  firectl            (default: the fetch mirror below)
#   GO_SDK_GIT   firecracker-go-sdk (default: likewise)
# at FIRECTL_REV (default: the commit below, 26 commits after firectl
# 0.2.0) and GO_SDK_REV
# (default v1.0.0, the SDK version that firectl pins). Without them this
# says so and exits 0: the tests that need them then skip, saying why.
#
# Everything else is Debian's: Go 1.19 and the golang-*-dev source packages
# of every module firectl imports. firectl's go.mod names "go 1.23.0",
# which Go 1.19's module loader cannot read, so the build is in GOPATH
# mode: imports resolve from /usr/share/gocode, go.mod and go.sum are not
# read, and no network is asked (GOPROXY=off). Versions differ from
# go.mod's (go-openapi's runtime 0.23, logrus 1.9.0, ...); the sources of
# firectl and the SDK are not touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/clients}
mirror=/work/.mirror
firectl_git=${FIRECTL_GIT:-$mirror/firecracker-microvm+firectl/repo}
sdk_git=${GO_SDK_GIT:-$mirror/firecracker-microvm+firecracker-go-sdk/repo}
firectl_rev=${FIRECTL_REV:-df2fb87a83a215876535b5d9a6471bbd9e57f023}
sdk_rev=${GO_SDK_REV:-v1.0.0}

# `git -C` takes bare and ordinary repositories alike.
rev_of() { git -C "$1" rev-parse -q --verify "$2^{commit}" 2>/dev/null; }
firectl_sha=$(rev_of "$firectl_git" "$firectl_rev") || firectl_sha=
sdk_sha=$(rev_of "$sdk_git" "$sdk_rev") || sdk_sha=
if [ -z "$firectl_sha" ] || [ -z "$sdk_sha" ]; then
  echo "build-go-clients: no firectl $firectl_rev in $firectl_git or no firecracker-go-sdk" \
       "$sdk_rev in $sdk_git: firectl and the SDK's tests not built (set FIRECTL_GIT and GO_SDK_GIT)" >&2
  exit 0
fi
archive() {  # REPO REV DIR
  rm -rf "$3" && mkdir -p "$3"
  git -C "$1" archive "$2" | tar -x -C "$3"
}

# What the binaries are made of: both sources and this script.
stamp="$firectl_sha $sdk_sha $(sha256sum < "$0" | cut -c1-16)"
if [ -x "$out/firectl" ] && [ -x "$out/go-sdk.test" ] &&
   [ "$(cat "$out/.sources" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
rm -f "$out/.sources"

# The Debian packages of what firectl compiles in (go list -deps), then
# what the SDK's tests add.
packages=(
  golang-go golang-github-appc-cni-dev golang-github-containernetworking-plugins-dev
  golang-github-containerd-fifo-dev golang-github-go-openapi-analysis-dev
  golang-github-go-openapi-errors-dev golang-github-go-openapi-jsonpointer-dev
  golang-github-go-openapi-jsonreference-dev golang-github-go-openapi-loads-dev
  golang-github-go-openapi-runtime-dev golang-github-go-openapi-spec-dev
  golang-github-go-openapi-strfmt-dev golang-github-go-openapi-swag-dev
  golang-github-go-openapi-validate-dev golang-github-asaskevich-govalidator-dev
  golang-github-go-stack-stack-dev golang-github-google-uuid-dev
  golang-github-hashicorp-errwrap-dev golang-github-hashicorp-go-multierror-dev
  golang-github-jessevdk-go-flags-dev golang-github-josharian-intern-dev
  golang-github-mailru-easyjson-dev golang-github-mitchellh-mapstructure-dev
  golang-github-oklog-ulid-dev golang-github-opennota-urlesc-dev
  golang-github-opentracing-opentracing-go-dev golang-github-puerkitobio-purell-dev
  golang-github-sirupsen-logrus-dev golang-github-vishvananda-netlink-dev
  golang-github-vishvananda-netns-dev golang-golang-x-net-dev golang-golang-x-sys-dev
  golang-golang-x-text-dev golang-gopkg-yaml.v2-dev golang-mongodb-mongo-driver-dev
  golang-github-stretchr-testify-dev golang-golang-x-crypto-dev
  golang-github-go-ping-ping-dev golang-github-mdlayher-vsock-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-go-clients: installing ${#missing[@]} Debian packages (Go and the modules imported)"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

gopath=$out/gopath
src=$gopath/src/github.com/firecracker-microvm
archive "$firectl_git" "$firectl_sha" "$src/firectl"
archive "$sdk_git" "$sdk_sha" "$src/firecracker-go-sdk"
echo "build-go-clients: building firectl $firectl_rev and the tests of firecracker-go-sdk $sdk_rev"
mkdir -p "$out/tmp"
go_in() {  # DIR GO-ARGS...: go, offline and in GOPATH mode, in DIR
  (cd "$1" && shift &&
    GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/cache" GOPROXY=off \
    GOFLAGS= CGO_ENABLED=0 TMPDIR="$out/tmp" go "$@")
}
go_in "$src/firectl" build -trimpath -o "$out/firectl.new" .
go_in "$src/firecracker-go-sdk" test -c -o "$out/go-sdk.test.new" .
mv "$out/firectl.new" "$out/firectl"
mv "$out/go-sdk.test.new" "$out/go-sdk.test"
echo "$stamp" > "$out/.sources"
