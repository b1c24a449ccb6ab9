#!/usr/bin/env bash
# Makes this machine run linux/arm64 programs through qemu-user: installs
# qemu-user-static (and qemu-system-arm, which boots the aarch64 ramdisk)
# when missing, mounts binfmt_misc when it is not mounted, and registers
# Debian's aarch64 handler (/usr/lib/binfmt.d/qemu-aarch64.conf) unless an
# enabled one is there already. Idempotent; a refusal by the kernel fails
# with the kernel's reason. Nothing to do on an arm64 machine.
set -euo pipefail

binfmt=/proc/sys/fs/binfmt_misc
conf=/usr/lib/binfmt.d/qemu-aarch64.conf

missing=()
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v qemu-system-aarch64 >/dev/null 2>&1 || missing+=(qemu-system-arm)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ $(uname -m) == aarch64 ]]; then
  exit 0
fi

if [[ ! -e $binfmt/register ]]; then
  if ! err=$(mount -t binfmt_misc binfmt_misc "$binfmt" 2>&1); then
    echo "cannot mount binfmt_misc on $binfmt: $err" >&2
    exit 1
  fi
fi

# An enabled handler of any name for aarch64 ELF files (e_machine 0xb7)
# will do: another tool (binfmt-support, docker/binfmt) may have made it.
handled() {
  local e
  for e in "$binfmt"/*; do
    case ${e##*/} in register | status) continue ;; esac
    if head -n1 "$e" 2>/dev/null | grep -qx enabled &&
      grep -q '^magic 7f454c46020101.*b700$' "$e" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

if [[ $(cat "$binfmt/status" 2>/dev/null) == disabled ]]; then
  echo 1 >"$binfmt/status"
fi
if handled; then
  exit 0
fi
if [[ ! -r $conf ]]; then
  echo "$conf is missing: qemu-user-static did not install it" >&2
  exit 1
fi
# A disabled entry of the same name blocks registration: remove it first.
if [[ -e $binfmt/qemu-aarch64 ]]; then
  echo -1 >"$binfmt/qemu-aarch64"
fi
# The register file takes the whole line in one write.
if ! err=$( (printf '%s' "$(cat "$conf")" >"$binfmt/register") 2>&1); then
  echo "the kernel refused the aarch64 binfmt_misc handler from $conf: $err" >&2
  exit 1
fi
if ! handled; then
  echo "registered $conf, but $binfmt has no enabled aarch64 handler" >&2
  exit 1
fi
echo "registered the aarch64 handler: $(sed -n 's/^interpreter //p' "$binfmt/qemu-aarch64")"
