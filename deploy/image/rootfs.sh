#!/usr/bin/env bash
# Make the root filesystem of the nanogrid image from a built binary: the stripped binary,
# the shared libraries it links (from this machine's Debian packages) and the loader, a
# passwd entry for the non-root user, /tmp and the data directory. Nothing else: no shell,
# no package manager.
#
#   deploy/image/rootfs.sh BINARY OUT_DIR
#
# OUT_DIR/root is the tree owned by root; OUT_DIR/data and OUT_DIR/cluster are the empty
# directories the image copies to /var/lib/nanogrid and /etc/nanogrid/cluster owned by the
# node user (a COPY onto a directory that exists keeps its owner, so they are kept apart).
#
# Used by `./dev image` (FROM scratch, no registry needed) and by deploy/Dockerfile's build
# stage, so both images have the same layout.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BINARY OUT_DIR" >&2; exit 2; }
bin=$1 out=$2
[ -x "$bin" ] || { echo "$bin is not an executable: build it first (cargo build --release -p nanogrid)" >&2; exit 1; }
command -v ldd >/dev/null || { echo "ldd is missing (Debian package libc-bin)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/data" "$out/cluster"
chmod 0700 "$out/data" "$out/cluster"
out=$out/root
mkdir -p "$out/usr/local/bin" "$out/etc/nanogrid" "$out/var/lib" "$out/tmp"
# Line tables are kept in release builds for backtraces on the build machine; the image
# does without (650 MB -> ~40 MB).
objcopy --strip-debug "$bin" "$out/usr/local/bin/nanogrid"
# `ldd` lists "name => /path (addr)" and the loader as "/path (addr)".
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done
cat > "$out/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nanogrid:x:10001:10001:nanogrid:/var/lib/nanogrid:/sbin/nologin
P
cat > "$out/etc/group" <<'G'
root:x:0:
nanogrid:x:10001:
G
echo "hosts: files dns" > "$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
echo "rootfs in $out: $(du -sh "$out" | cut -f1)"
