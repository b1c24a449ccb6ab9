#!/bin/sh
# Usage: closure.sh DEST PROGRAM...
# Copies each program and every shared library it loads (the dynamic loader
# included) under DEST at the same absolute paths: the program's runtime
# closure, ready to be a layer of a root file system that has no package
# manager.
#
# Natively, ldd (run in the build image) resolves them. Cross-compiled
# (CROSS_COMPILE set, by the cross build images' toolchain.env), it cannot run
# here, so its ELF headers are read instead: the interpreter (PT_INTERP)
# and each DT_NEEDED library, recursively, looked up in the target's
# multiarch folders as its loader does (/lib/<triplet>, /usr/lib/<triplet>,
# then /lib, /usr/lib), never in the cross toolchain's own folders.
set -eu
dest=$1
shift

copy() {
  mkdir -p "$dest$(dirname "$1")"
  cp -L "$1" "$dest$1"
}

if [ -z "${CROSS_COMPILE:-}" ]; then
  for prog in "$@"; do
    for f in "$prog" $(ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      copy "$f"
    done
  done
else
  triplet=${CROSS_COMPILE%-}
  readelf=${CROSS_COMPILE}readelf
  libdirs="/lib/$triplet /usr/lib/$triplet /lib /usr/lib"
  # Files still to read, and the sonames found so far (one a line).
  todo=$(mktemp) found=$(mktemp)
  for prog in "$@"; do
    copy "$prog"
    echo "$prog" >>"$todo"
  done
  while [ -s "$todo" ]; do
    file=$(head -n 1 "$todo")
    sed -i 1d "$todo"
    interp=$("$readelf" -lW "$file" | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p')
    if [ -n "$interp" ] && [ ! -e "$dest$interp" ]; then
      copy "$interp"
      # The loader, once running, is the library of its own name (libc
      # needs it): no second copy.
      basename "$interp" >>"$found"
    fi
    for soname in $("$readelf" -dW "$file" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]$/\1/p'); do
      ! grep -qxF "$soname" "$found" || continue
      path=""
      for d in $libdirs; do
        if [ -e "$d/$soname" ]; then path="$d/$soname"; break; fi
      done
      if [ -z "$path" ]; then
        echo "closure.sh: $file needs $soname, which is in none of: $libdirs" >&2
        exit 1
      fi
      echo "$soname" >>"$found"
      copy "$path"
      echo "$path" >>"$todo"
    done
  done
  rm -f "$todo" "$found"
fi
# Report what went in, for the step's log.
find "$dest" -type f | sort
