#!/usr/bin/env bash
# Usage: debian-lock.sh [OPTIONS] OUTPUT PACKAGE...
# Writes OUTPUT (a BUILD.yaml fragment): the exact Debian packages (and
# their download addresses) of a base root file system, resolved by apt as
# if nothing were installed, as a pinned fixed-output fetch (`debs`), one
# `extract` per package and a `base-rootfs`. Like a lock file, the result
# is committed; after running this, build once: the `debs` step fails with
# the new output digest, which goes into `debs_digest` in BUILD.yaml.
#
# The fetch also checks every file against the SHA256 apt gives for it, so
# a wrong file is named before the digest of the whole set is compared.
# apt runs with a private configuration in a temporary folder (only
# Debian 12's archive, the architecture asked for), never the host's
# sources or dpkg architectures.
#
# Options:
#   --arch ARCH        Debian architecture (default amd64)
#   --foreign ARCH     a second architecture apt may install from, as
#                      `dpkg --add-architecture` does: `libssl-dev:arm64`
#                      beside amd64 tools, for a cross toolchain. Targets of
#                      that architecture's packages end in `-ARCH`
#                      (`deb-libc6-arm64`), so both libc6 can be listed
#   --prefix P         prefix of every target name (P + debs, deb-*, base-rootfs)
#   --digest-var NAME  the variable holding the fetch's digest (default debs_digest)
#   --when EXPR        a `when:` for every target written
#   --on-top-of LIST   packages (space-separated) a base already has: what
#                      they resolve to is left out of this list
#   --exact            these packages only, without their dependencies
#   --first-depends    (with --exact) each package stands for its first
#                      dependency: linux-image-amd64 for the kernel it names
#   --no-rootfs        no `base-rootfs` target
#   --no-extract       no `deb-*` targets either: the fetch only
#   --source           source packages instead (`apt-get source`): per
#                      package, a fetch `<P><pkg>-src` (digest variable
#                      `<pkg>_src_digest`), `extract`s of its upstream and
#                      Debian tarballs and `<P><pkg>-source`, a tree of the
#                      upstream source with `debian/` in it. A file the
#                      archive does not serve (HTTP 404) is left out with a
#                      comment; the upstream tarball is required.
set -euo pipefail
arch=amd64 foreign="" prefix="" digest_var=debs_digest when="" on_top_of="" exact=0 rootfs=1 extract=1 first_depends=0 source=0
while (($#)) && [[ $1 == --* ]]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --foreign) foreign=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --digest-var) digest_var=$2; shift 2 ;;
    --when) when=$2; shift 2 ;;
    --on-top-of) on_top_of=$2; shift 2 ;;
    --exact) exact=1; shift ;;
    --first-depends) first_depends=1; shift ;;
    --no-rootfs) rootfs=0; shift ;;
    --no-extract) extract=0 rootfs=0; shift ;;
    --source) source=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if (($# < 2)); then
  echo "usage: $0 [OPTIONS] OUTPUT PACKAGE..." >&2
  exit 2
fi
output=$1
shift
packages=("$@")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A private apt: its own lists, status (empty: nothing installed), cache and
# sources, for one architecture.
mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/apt/preferences.d"
touch "$tmp/apt/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for type in deb deb-src; do
  for suite in "debian bookworm" "debian bookworm-updates" "debian-security bookworm-security"; do
    set -- $suite
    echo "$type [signed-by=$keyring] http://deb.debian.org/$1 $2 main"
  done
done >"$tmp/apt/sources.list"
apt=(-o "Dir::State=$tmp/apt" -o "Dir::State::Lists=$tmp/apt/lists"
  -o "Dir::State::status=$tmp/apt/status" -o "Dir::Cache=$tmp/apt/cache"
  -o "Dir::Etc::SourceList=$tmp/apt/sources.list" -o "Dir::Etc::SourceParts=$tmp/apt/none"
  -o "Dir::Etc::Preferences=$tmp/apt/preferences" -o "Dir::Etc::PreferencesParts=$tmp/apt/preferences.d"
  -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o APT::Sandbox::User=root)
[[ -z $foreign ]] || apt+=(-o "APT::Architectures::=$foreign")
apt-get -qq "${apt[@]}" update

# `'URL' FILE SIZE SHA256:HEX` lines of what to fetch, in file order.
resolve() {
  apt-get -qq "${apt[@]}" install --print-uris -y --no-install-recommends "$@" |
    grep "^'" | tr -d "'" | awk '{print $2}' | sort
}
# apt-get install prints the weakest hash; `apt-get download` the SHA256.
with_sha256() {
  local specs=()
  while read -r file; do
    local name=${file%%_*} rest=${file#*_}
    local version=${rest%_*} deb_arch=${rest##*_}
    deb_arch=${deb_arch%.deb}
    # `name:arch=version`: with a foreign architecture, the same name
    # may be listed for both.
    [[ $deb_arch == all ]] || name+=":$deb_arch"
    specs+=("$name=${version//%3a/:}")
  done
  ((${#specs[@]})) || return 0
  apt-get -qq "${apt[@]}" download --print-uris "${specs[@]}" | tr -d "'" | sort -k2
}

if ((source)); then
  {
    echo "# Generated by debian-lock.sh --source from: ${packages[*]}. Do not edit."
    echo "targets:"
    for pkg in "${packages[@]}"; do
      apt-get -qq "${apt[@]}" source --print-uris "$pkg" | grep "^'" | tr -d "'" >"$tmp/src"
      name="$prefix$pkg"
      var="${pkg//[-.+]/_}_src_digest"
      orig="" debian="" kept=()
      while read -r url file size hash; do
        if ! curl -fsI --retry 3 -o /dev/null "$url"; then
          echo "    # $file: not served by the archive when locked ($url)" >>"$tmp/missing"
          echo "warning: $url is not served; left out" >&2
          continue
        fi
        kept+=("$url $file $hash")
        case $file in
          *.orig.tar.*) orig=$file ;;
          *.debian.tar.*) debian=$file ;;
        esac
      done <"$tmp/src"
      if [[ -z $orig ]]; then
        echo "error: no upstream tarball for $pkg" >&2
        exit 1
      fi
      echo "  $name-src:"
      echo "    rule: run"
      [[ -z $when ]] || echo "    when: $when"
      echo "    output_digest: \${$var}"
      echo "    outs: [src/]"
      [[ ! -s $tmp/missing ]] || cat "$tmp/missing"
      rm -f "$tmp/missing"
      echo "    cmd: |"
      echo "      mkdir -p \$OUT/src && cd \$OUT/src"
      for k in "${kept[@]}"; do
        set -- $k
        echo "      curl -fsSL --retry 3 -o $2 $1"
      done
      echo "      sha256sum -c --strict --quiet <<'SUMS'"
      for k in "${kept[@]}"; do
        set -- $k
        echo "      ${3#SHA256:}  $2"
      done
      echo "      SUMS"
      echo "  $name-orig:"
      echo "    rule: extract"
      [[ -z $when ]] || echo "    when: $when"
      echo "    from: \"$name-src:src/$orig\""
      echo "    strip_components: 1"
      if [[ -n $debian ]]; then
        echo "  $name-debian:"
        echo "    rule: extract"
        [[ -z $when ]] || echo "    when: $when"
        echo "    from: \"$name-src:src/$debian\""
      fi
      echo "  $name-source:"
      echo "    rule: rootfs"
      [[ -z $when ]] || echo "    when: $when"
      echo "    layers:"
      echo "      - {from: $name-orig}"
      [[ -z $debian ]] || echo "      - {from: $name-debian}"
    done
  } >"$tmp/out"
  mv "$tmp/out" "$output"
  echo "wrote $output (${#packages[@]} source packages)"
  exit 0
fi

if ((exact)); then
  if ((first_depends)); then
    for i in "${!packages[@]}"; do
      packages[i]=$(apt-cache "${apt[@]}" depends "${packages[i]}" |
        awk '/^  Depends:/ {print $2; exit}')
    done
  fi
  printf '%s\n' "${packages[@]}" | while read -r p; do
    apt-get -qq "${apt[@]}" download --print-uris "$p" | tr -d "'" | awk '{print $2}'
  done | sort >"$tmp/files"
else
  # With a base, what apt would add to a system that has it: the packages
  # resolved together with the base, less the base alone (so a dependency
  # the base already satisfies, such as an amd64 pkgconf, is not fetched
  # again for the foreign architecture).
  # shellcheck disable=SC2086
  resolve "${packages[@]}" $on_top_of >"$tmp/files"
  if [[ -n $on_top_of ]]; then
    # shellcheck disable=SC2086
    resolve $on_top_of >"$tmp/base"
    comm -23 "$tmp/files" "$tmp/base" >"$tmp/extra"
    mv "$tmp/extra" "$tmp/files"
  fi
fi
with_sha256 <"$tmp/files" >"$tmp/list"
if [[ $(wc -l <"$tmp/list") != $(wc -l <"$tmp/files") ]]; then
  echo "error: apt gave no SHA256 for some packages" >&2
  exit 1
fi
w() { [[ -z $when ]] || echo "    when: $when"; }
# The target name of a .deb: the package name, made a valid target name,
# and `-ARCH` for a foreign architecture's package.
deb_target() {
  local name=${1%%_*} deb_arch=${1##*_}
  deb_arch=${deb_arch%.deb}
  name="${prefix}deb-${name//[.+]/-}"
  [[ -z $foreign || $deb_arch != "$foreign" ]] || name+="-$foreign"
  echo "$name"
}
{
  echo "# Generated by lock.sh from: ${packages[*]}. Do not edit."
  echo "targets:"
  echo "  ${prefix}debs:"
  echo "    rule: run"
  w
  echo "    output_digest: \${$digest_var}"
  echo "    outs: [debs/]"
  echo "    cmd: |"
  echo "      mkdir -p \$OUT/debs && cd \$OUT/debs"
  while read -r url file _; do
    echo "      curl -fsSL --retry 3 -o $file $url"
  done <"$tmp/list"
  echo "      sha256sum -c --strict --quiet <<'SUMS'"
  while read -r _ file _ hash; do
    echo "      ${hash#SHA256:}  $file"
  done <"$tmp/list"
  echo "      SUMS"
  while read -r _ file _; do
    ((extract)) || break
    echo "  $(deb_target "$file"):"
    echo "    rule: extract"
    w
    echo "    from: \"${prefix}debs:debs/$file\""
  done <"$tmp/list"
  if ((rootfs)); then
    echo "  ${prefix}base-rootfs:"
    echo "    rule: rootfs"
    w
    echo "    layers:"
    while read -r _ file _; do
      echo "      - {from: $(deb_target "$file")}"
    done <"$tmp/list"
    echo "    components:"
    echo "      - {type: symlink, target: dash, link: /bin/sh}"
    # What a dpkg installation's alternatives would add.
    if grep -q "^[^ ]* gcc_" "$tmp/list"; then
      echo "      - {type: symlink, target: gcc, link: /usr/bin/cc}"
    fi
  fi
} >"$tmp/out"
mv "$tmp/out" "$output"
echo "wrote $output ($(wc -l <"$tmp/list") packages)"
