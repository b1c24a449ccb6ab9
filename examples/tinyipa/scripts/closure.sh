#!/bin/sh
# Usage: closure.sh DEST PROGRAM...
# Copies each program and every shared library it loads (as ldd, run in the
# build image, resolves them, the dynamic loader included) under DEST at the
# same absolute paths: the program's runtime closure, ready to be a layer of
# a root file system that has no package manager.
set -eu
dest=$1
shift
for prog in "$@"; do
  for f in "$prog" $(ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$dest$(dirname "$f")"
    cp -L "$f" "$dest$f"
  done
done
# Report what went in, for the step's log.
find "$dest" -type f | sort
