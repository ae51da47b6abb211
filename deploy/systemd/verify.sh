#!/usr/bin/env bash
# Checks the georep systemd units with systemd-analyze verify, as far as a
# machine without these units installed allows. Usage: verify.sh BINARY
#
# verify refuses a unit whose ExecStart program does not exist, and the units
# name /usr/local/bin/georep, so each unit is checked as a copy (in a temp
# dir) that points at BINARY instead. The template is checked as an instance
# (georep-master@demo.service): only an instance has its %i resolved and its
# ExecStart checked. verify exits 0 on unknown keys and bad values (it only
# warns), so any output at all is a failure.
set -euo pipefail

bin="${1:?usage: verify.sh BINARY}"
bin="$(realpath "$bin")"
[ -x "$bin" ] || { echo "verify.sh: $bin is not an executable; run make build first" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "verify.sh: systemd-analyze is missing; install the systemd package" >&2; exit 1; }

here="$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

units=()
for unit in "$here"/*.service; do
	name="$(basename "$unit")"
	case "$name" in
	*@.service) name="${name%@.service}@demo.service" ;;
	esac
	sed "s#/usr/local/bin/georep#$bin#g" "$unit" >"$tmp/$name"
	units+=("$tmp/$name")
done

out="$(systemd-analyze verify --man=no "${units[@]}" 2>&1)" || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
	echo "systemd-analyze verify warned (treated as an error):" >&2
	echo "$out" >&2
	exit 1
fi
echo "systemd units OK: $(cd "$here" && echo *.service)"
