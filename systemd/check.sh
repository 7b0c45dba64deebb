#!/usr/bin/env bash
# Checks the files in systemd/ the way CI does (.ci/run), on any Linux host
# with systemd-analyze, whether or not systemd is PID 1:
#   1. `systemd-analyze verify` of nexusd.service, in a throw-away root that
#      holds the host's stock units and stubs at the unit's ExecStart and
#      ExecReload paths (verify insists that they exist), so neither the
#      unit nor the host is changed; any warning fails, not only errors
#      (an unknown or misspelled key is only a warning to systemd);
#   2. `systemd-analyze security --offline=true`: the exposure must be at
#      most 1.5 (nexusd.service scores 0.4; a bare Type=notify unit with
#      DynamicUser=yes scores 8.4 with systemd 252);
#   3. `systemd-sysusers --root` on nexus.sysusers: it parses and creates
#      the user and group the unit runs as.
set -euo pipefail
cd "$(dirname "$0")"

# The exposure allowed, in systemd-analyze's tenths (15 = 1.5).
MAX_EXPOSURE_TENTHS=15

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

# 1. verify
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/local/bin" "$root/usr/bin"
ln -s usr/bin "$root/bin"
cp -r "$units" "$root/usr/lib/systemd/system"
for command in usr/local/bin/nexusd usr/bin/kill; do
    printf '#!/bin/sh\n' >"$root/$command"
    chmod +x "$root/$command"
done
cp nexusd.service "$root/etc/systemd/system/"
if ! output=$(systemd-analyze verify --root="$root" nexusd.service 2>&1) || [ -n "$output" ]; then
    printf 'systemd-analyze verify nexusd.service failed:\n%s\n' "$output" >&2
    exit 1
fi
echo "systemd-analyze verify nexusd.service: no warnings"

# 2. security
if ! report=$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE_TENTHS" nexusd.service 2>&1); then
    printf '%s\nexposure above %s.%s\n' "$report" $((MAX_EXPOSURE_TENTHS / 10)) $((MAX_EXPOSURE_TENTHS % 10)) >&2
    exit 1
fi
grep 'Overall exposure level' <<<"$report"

# 3. sysusers
mkdir -p "$root/sysusers/etc"
systemd-sysusers --root="$root/sysusers" "$PWD/nexus.sysusers"
grep -q '^nexus:' "$root/sysusers/etc/passwd"
grep -q '^nexus:' "$root/sysusers/etc/group"
echo "nexus.sysusers creates the user and group nexus"
