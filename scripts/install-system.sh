#!/usr/bin/env bash
# Install the Debian packages the pec-cutover sandbox runs (Dovecot with IMAP and submission, BIND9, unbound, nginx, isync, openssl)
# and the unprivileged mail user. Idempotent and non-interactive; package post-install scripts must not
# start the system services (the sandbox runs its own instances on 127.0.0.1), so a policy-rc.d that
# forbids service starts is put in place for the duration of the install if none exists.
set -euo pipefail

PACKAGES=(dovecot-core dovecot-imapd dovecot-submissiond bind9 bind9-utils bind9-dnsutils unbound nginx-light isync openssl
          chromium)  # chromium: the browser test of the Prefect UI (tests/flows/test_ui_gate.py)
MAIL_USER=pecmail   # Dovecot refuses to store mail as root; see cutover/sandbox/_dovecot.py

if [[ $(id -u) -ne 0 ]]; then
  echo "install-system.sh: run as root (apt-get and useradd need it)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
  fi
  trap 'if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  echo "installed: ${missing[*]}"
else
  echo "all sandbox packages already installed"
fi

if ! id "$MAIL_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$MAIL_USER"
  echo "created system user $MAIL_USER"
fi
