#!/usr/bin/env bash
# Fails unless BINARY needs nothing at run time but the C library: libc, libm,
# libgcc_s (unwinding) and the dynamic loader (plus the kernel's vDSO). hoist
# ships as one file; a libisal.so, liblzma.so, libz.so or libzstd.so here
# means a -sys crate linked a system library instead of its bundled source.
# Prints the dependencies; the integration tests and release.sh run it.
set -euo pipefail
binary=${1:?usage: scripts/check-linkage.sh BINARY}
deps=$(ldd "$binary")
printf '%s\n' "$deps"
extra=$(printf '%s\n' "$deps" | awk '{print $1}' | grep -Ev \
  '^(linux-vdso\.so\.1|linux-gate\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|/lib(64)?/ld-linux[-a-z0-9_.]*\.so\.[0-9]+|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$' || true)
if [ -n "$extra" ]; then
  echo "error: $binary needs more than the C library at run time:" >&2
  printf '  %s\n' $extra >&2
  echo "hint: link it statically (a -sys crate's bundled/static feature), or hoist will not start on a bare host" >&2
  exit 1
fi
