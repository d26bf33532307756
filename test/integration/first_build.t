#!/bin/bash
# The README's first command on a machine that has none of the packages yet: pkg-config
# knows nothing until `make deps` has run. A copy of the tree is built with a pkg-config
# that fails until the (stand-in) deps step has run, as on a fresh Debian 12: `make demo`
# must build and install everything the first time, and a build that skips deps must say
# which package is missing instead of failing on a header.
. "$(dirname "$0")/../lib/tap.sh"
HERE=$(cd "$(dirname "$0")/../.." && pwd)

scratch_dir
mkdir -p "$D/src" "$D/fakebin"
(cd "$HERE" && git ls-files -co --exclude-standard -z | grep -zv '^build' | xargs -0 cp --parents -t "$D/src")
REAL_PKG_CONFIG=$(command -v pkg-config)
cat >"$D/fakebin/pkg-config" <<SH
#!/bin/sh
# Knows no package until the deps step has left its mark.
[ -e "$D/deps-ran" ] || exit 1
exec "$REAL_PKG_CONFIG" "\$@"
SH
chmod +x "$D/fakebin/pkg-config"
export PATH="$D/fakebin:$PATH"

out=$(make -C "$D/src" --no-print-directory all 2>&1)
ok $(($? == 0)) "before deps ran, 'make all' fails"
like "$out" "pkg-config does not know libcrypto: run 'make deps'" "and names the missing package and what to do"

# Installed into a throwaway root: the tests running beside this one use the system's.
make -C "$D/src" --no-print-directory DEPS="touch $D/deps-ran" DEMO=true DESTDIR="$D/root" demo >"$D/demo.log" 2>&1
rc=$?
is "$rc" 0 "'make demo' works the first time: deps first, then the build sees the packages"
[ "$rc" = 0 ] || tail -n 20 "$D/demo.log" | sed 's/^/# /' >&2
for bin in tenant-backup tenant-backup-agent-mysql tenant-backup-agent-redis tenant-backup-agent-mongodb; do
	ok $([ -x "$D/src/build/bin/$bin" ]; echo $?) "it built $bin"
done
ok $([ -f "$D/src/extension/tenant_backup.so" ]; echo $?) "it built the extension"
done_testing
