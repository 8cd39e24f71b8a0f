#!/bin/sh
# Builds the surveyor image for linux/amd64 and linux/arm64 as one
# manifest list (an OCI index once pushed with --format oci) in buildah's
# storage, from the two static binaries alone (deploy/Containerfile: FROM
# scratch, so no registry is needed and nothing runs under emulation):
#
#   cargo build --release --locked --target x86_64-unknown-linux-musl
#   cargo build --release --locked --target aarch64-unknown-linux-musl
#   deploy/build-image.sh [IMAGE]          # IMAGE: localhost/surveyor:0.1.0
#
# Any manifest list already named IMAGE is replaced. Storage follows
# buildah's configuration (CONTAINERS_STORAGE_CONF, storage.conf); where
# overlay mounts are not allowed, set STORAGE_DRIVER=vfs.
set -eu
image=${1:-localhost/surveyor:0.1.0}
root=$(cd "$(dirname "$0")/.." && pwd)

if buildah manifest inspect "$image" >/dev/null 2>&1; then
    buildah manifest rm "$image" >/dev/null
fi
buildah manifest create "$image" >/dev/null
for platform in amd64:x86_64 arm64:aarch64; do
    arch=${platform%%:*}
    binary=$root/target/${platform#*:}-unknown-linux-musl/release/surveyor
    if [ ! -f "$binary" ]; then
        echo "build-image.sh: $binary is missing: cargo build --release --locked --target ${platform#*:}-unknown-linux-musl" >&2
        exit 1
    fi
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    cp "$binary" "$context/surveyor"
    buildah build --quiet --isolation chroot --platform "linux/$arch" \
        --manifest "$image" -f "$root/deploy/Containerfile" "$context" >/dev/null
    rm -rf "$context"
    trap - EXIT
    echo "build-image.sh: $image linux/$arch from $binary"
done
