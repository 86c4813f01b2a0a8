#!/usr/bin/env bash
# System packages chainfs needs on a fresh Debian machine: FUSE for the mount, etcd (3.4) for the
# replicated metadata backend, iproute2 and iptables for the network-namespace fault tests, rsync
# and the sqlite3 shell for the mount's tests (they run them as users would), redis-server (the
# baseline of `chainfs bench kv`), libibverbs1 (Mooncake's wheel links it) and chromium (headless
# screenshot tests of the load test's web UI and report).
# Skipped when present, or when we are not root (those tests then skip with a reason).
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ldconfig -p 2>/dev/null | grep -q libibverbs.so.1 || need+=(libibverbs1)
[ -e /usr/lib/x86_64-linux-gnu/libfuse.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libfuse.so.2 ] || need+=(libfuse2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${need[*]} (not root or no apt-get); FUSE, etcd, netns, bench peers or browser tests will be unavailable" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null || echo "note: could not install ${need[*]}" >&2
