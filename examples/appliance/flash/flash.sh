#!/bin/sh
# Writes the appliance's disk image to a block device or a file, reads it
# back and checks it against the image's SHA-256.
#   ./appliance-flash.run -- /dev/sdX
set -eu
if [ $# -ne 1 ]; then
  echo "usage: appliance-flash.run -- DEVICE|FILE" >&2
  exit 2
fi
dest=$1
sum=$(cut -d' ' -f1 appliance.img.sha256)
size=$(cat appliance.img.size)
if [ -b "$dest" ]; then
  have=$(blockdev --getsize64 "$dest")
  if [ "$have" -lt "$size" ]; then
    echo "$dest holds $have bytes; the image needs $size" >&2
    exit 1
  fi
fi
echo "writing the appliance image ($size bytes) to $dest"
gzip -dc appliance.img.gz | dd of="$dest" bs=4M conv=notrunc,fsync status=none
if [ -b "$dest" ]; then
  # Read back from the device, not from the page cache.
  blockdev --flushbufs "$dest"
fi
got=$(head -c "$size" "$dest" | sha256sum | cut -d' ' -f1)
if [ "$got" != "$sum" ]; then
  echo "verification failed: $dest holds $got, the image is $sum" >&2
  exit 1
fi
echo "verified: $dest holds the appliance image ($sum)"
