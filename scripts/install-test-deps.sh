#!/usr/bin/env bash
# Installs the external programs the test suite and benchmarks drive, without starting any daemon:
#   - Postfix's smtp-source / smtp-sink (real SMTP flood client and reference sink)
#   - promtool (lints a live metrics exposition)
#   - swaks (a real SMTP test client)
# Postfix and Prometheus are unpacked with dpkg -x into .tools/ so no MTA or Prometheus server is ever started.
# Idempotent: a second run with everything present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

have() { [ -x "$TOOLS/bin/$1" ] || command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
}

extract_deb() { # extract_deb PACKAGE: unpack a Debian package into .tools/root without installing it
  local pkg=$1 dl
  dl=$(mktemp -d)
  apt_update_once
  chmod 755 "$dl" # apt's _apt user downloads into it
  (cd "$dl" && apt-get download -qq "$pkg")
  dpkg -x "$dl"/"$pkg"_*.deb "$TOOLS/root"
  rm -rf "$dl"
}

mkdir -p "$TOOLS/bin" "$TOOLS/root"
if [ ! -x "$TOOLS/bin/smtp-source" ] || [ ! -x "$TOOLS/bin/smtp-sink" ]; then
  # smtp-source/smtp-sink link only against libraries postfix itself ships plus common system ones.
  extract_deb postfix
  # Postfix's private shared libraries live in /usr/lib/postfix; the wrapper sets LD_LIBRARY_PATH for them.
  for b in smtp-source smtp-sink; do
    cat > "$TOOLS/bin/$b" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$TOOLS/root/usr/lib/postfix\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$TOOLS/root/usr/sbin/$b" "\$@"
WRAP
    chmod +x "$TOOLS/bin/$b"
  done
fi
if ! have promtool; then
  extract_deb prometheus
  ln -sf "$TOOLS/root/usr/bin/promtool" "$TOOLS/bin/promtool"
fi
if ! command -v swaks >/dev/null 2>&1; then
  apt_update_once
  apt-get install -y -qq --no-install-recommends swaks >/dev/null
fi
{ "$TOOLS/bin/smtp-source" 2>&1 || true; } | grep -q usage || { echo "smtp-source does not run" >&2; exit 1; }
"$TOOLS/bin/promtool" --version >/dev/null
echo "test tools ready in $TOOLS/bin"
