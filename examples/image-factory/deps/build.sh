#!/bin/sh
# Resolves a dependency manifest against vendored libraries and installs the
# resolved set: one static library, the headers, and a lock file.
#
#   build.sh MANIFEST VENDOR [PREFIX]      (PREFIX defaults to /usr/local)
#
# MANIFEST lists one library per line, `name` or `name version` (a version
# must be the one vendored); `#` starts a comment. VENDOR/<name>/ holds a
# library's C files and headers, VERSION, and REQUIRES (libraries it needs,
# one per line). The resolved set is the closure over REQUIRES, sorted, so
# comments, blank lines, order, duplicates and naming a library that another
# one already requires do not change it, and neither does anything installed
# from it: the same set gives the same bytes.
#
# Installs PREFIX/lib/libdeps.a, PREFIX/include/<headers> and
# PREFIX/share/deps/deps.lock (`name version`, one per line).
# Needs only a POSIX shell, coreutils, a C compiler and ar.
set -eu
export LC_ALL=C
manifest=$1 vendor=$2 prefix=${3:-/usr/local}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

known() {
	[ -f "$vendor/$1/VERSION" ] || { echo "deps: unknown library \`$1' (no $vendor/$1/VERSION)" >&2; exit 1; }
}

# What the manifest asks for.
: >"$work/set"
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
	lineno=$((lineno + 1))
	line=${line%%#*}
	set -f
	set -- $line
	set +f
	[ $# -eq 0 ] && continue
	[ $# -le 2 ] || { echo "deps: $manifest:$lineno: expected \`name [version]'" >&2; exit 1; }
	known "$1"
	if [ $# -eq 2 ] && [ "$2" != "$(cat "$vendor/$1/VERSION")" ]; then
		echo "deps: $manifest:$lineno: $1 $2 requested, $(cat "$vendor/$1/VERSION") vendored" >&2
		exit 1
	fi
	echo "$1" >>"$work/set"
done <"$manifest"

# The closure over REQUIRES, sorted and without duplicates.
sort -u -o "$work/set" "$work/set"
while :; do
	cp "$work/set" "$work/before"
	for name in $(cat "$work/before"); do
		if [ -f "$vendor/$name/REQUIRES" ]; then
			for req in $(cat "$vendor/$name/REQUIRES"); do
				known "$req"
				echo "$req" >>"$work/set"
			done
		fi
	done
	sort -u -o "$work/set" "$work/set"
	[ "$(cat "$work/set")" != "$(cat "$work/before")" ] || break
done
[ -s "$work/set" ] || { echo "deps: $manifest resolves to nothing" >&2; exit 1; }

# Headers first (a library may include another's), then objects, then one
# archive with its members in name order (ar D: no times, owners or modes).
mkdir -p "$prefix/include" "$prefix/lib" "$prefix/share/deps" "$work/obj"
for name in $(cat "$work/set"); do
	for h in "$vendor/$name"/*.h; do
		if [ -f "$h" ]; then install -m 0644 "$h" "$prefix/include/"; fi
	done
done
: >"$work/lock"
for name in $(cat "$work/set"); do
	for c in "$vendor/$name"/*.c; do
		[ -f "$c" ] || continue
		base=${c##*/}
		cc -O2 -Wall -Wextra -Werror -I"$prefix/include" -c "$c" -o "$work/obj/${name}_${base%.c}.o"
	done
	echo "$name $(cat "$vendor/$name/VERSION")" >>"$work/lock"
done
rm -f "$prefix/lib/libdeps.a"
(cd "$work/obj" && ar rcsD "$prefix/lib/libdeps.a" $(ls))
install -m 0644 "$work/lock" "$prefix/share/deps/deps.lock"
echo "deps: resolved $(tr '\n' ' ' <"$work/lock")"
