#!/usr/bin/env bash
# Re-fetch the dashboard's third-party files (gateway/ui/vendor/) from their pinned npm releases.
#
#   scripts/vendor-ui.sh          fetch the pinned tarballs with npm, check each against its
#                                 pinned integrity, copy the files in, then check SHA256SUMS
#   scripts/vendor-ui.sh --check  offline: only check the checked-in files against SHA256SUMS
#
# The files are checked in, so neither CI nor an install needs npm or the network; this script
# is how they got there and how a version bump is made (change the pins, run it, commit). A
# bump changes SHA256SUMS too: write it with `--write-sums` after reviewing the new files.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENDOR="$ROOT/gateway/ui/vendor"

# package@version, then the tarball's npm integrity (sha512, as `npm view <pkg> dist.integrity`).
SOCKETIO="socket.io-client@4.8.4"
SOCKETIO_SHA512="sha512-7wjKAvVXYOJsbmUgkWbnhPD4bFpkqrUR0++XOjpGFmqDqsqV1CI93VTraeExLxpjxEqrWgFoSRZu1ihjLWfkAA=="
UPLOT="uplot@1.6.32"
UPLOT_SHA512="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="

check() {
	(cd "$VENDOR" && sha256sum --quiet -c SHA256SUMS)
	echo "vendored UI files match gateway/ui/vendor/SHA256SUMS"
}

fetch() {
	local spec="$1" want="$2" dest="$3" tmp tarball got
	shift 3
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' RETURN
	tarball="$(cd "$tmp" && npm pack --silent "$spec")"
	got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tarball" | base64 -w0)"
	if [ "$got" != "$want" ]; then
		echo "$spec: integrity $got, expected $want" >&2
		exit 1
	fi
	tar -xzf "$tmp/$tarball" -C "$tmp"
	mkdir -p "$VENDOR/$dest"
	cp "$tmp/package/LICENSE" "$VENDOR/$dest/LICENSE"
	for file in "$@"; do
		cp "$tmp/package/$file" "$VENDOR/$dest/"
	done
	echo "$spec -> gateway/ui/vendor/$dest"
}

write_sums() {
	(cd "$VENDOR" && find . -type f ! -name SHA256SUMS ! -name README.md | sed 's|^\./||' \
		| LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
	echo "wrote gateway/ui/vendor/SHA256SUMS"
}

case "${1:-}" in
--check) check ;;
--write-sums) write_sums ;;
"")
	command -v npm >/dev/null || { echo "npm is needed to fetch the UI's vendored files" >&2; exit 1; }
	fetch "$SOCKETIO" "$SOCKETIO_SHA512" socket.io-client dist/socket.io.esm.min.js
	fetch "$UPLOT" "$UPLOT_SHA512" uplot dist/uPlot.esm.js dist/uPlot.min.css
	check
	;;
*)
	echo "usage: $0 [--check|--write-sums]" >&2
	exit 2
	;;
esac
