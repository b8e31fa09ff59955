#!/usr/bin/env bash
# Makes a release: dist/hoist-VERSION-ARCH-linux-gnu.tar.gz holding the
# binary (which needs only the C library), shell completions for bash, zsh
# and fish, a man page for hoist and each command, README.md and the licence
# files, plus a SHA256SUMS of those; and dist/SHA256SUMS of the tarball.
# Completions and man pages come from the binary itself (clap_complete,
# clap_mangen), so they match its flags. Run it from a clean checkout: the
# binary names the commit it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in nasm make; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: building ISA-L into hoist needs ${missing[*]}" >&2
  echo "hint: apt-get install nasm make" >&2
  exit 1
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "warning: the work tree has uncommitted changes; --version names HEAD, which does not hold them" >&2
fi

cargo build --release --locked -p hoist
bin="${CARGO_TARGET_DIR:-target}/release/hoist"
scripts/check-linkage.sh "$bin" >/dev/null

version=$("$bin" --version | awk '{print $2}')
name="hoist-$version-$(uname -m)-linux-gnu"
stage="dist/$name"
rm -rf "$stage" "dist/$name.tar.gz"
mkdir -p "$stage/completions" "$stage/man/man1"

# Line tables are for local debugging: the shipped file is a sixth the size without them.
objcopy --strip-debug "$bin" "$stage/hoist"
"$stage/hoist" completions bash >"$stage/completions/hoist.bash"
"$stage/hoist" completions zsh >"$stage/completions/_hoist"
"$stage/hoist" completions fish >"$stage/completions/hoist.fish"
"$stage/hoist" manpages "$stage/man/man1"
cp README.md LICENSE-MIT LICENSE-APACHE "$stage/"
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

# Same inputs, same bytes: sorted names, no owners, the commit's time, gzip -n.
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar -C dist --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -cf - "$name" \
  | gzip -n -9 >"dist/$name.tar.gz"
(cd dist && sha256sum "$name.tar.gz" >SHA256SUMS)
rm -rf "$stage"

echo "dist/$name.tar.gz" >&2
tar -tzf "dist/$name.tar.gz" | sed 's/^/  /' >&2
cat dist/SHA256SUMS
