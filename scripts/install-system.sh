#!/usr/bin/env bash
# Install the Debian packages the pec-cutover sandbox runs (Dovecot with submission and LMTP, BIND9, unbound,
# nginx, Postfix, isync, openssl, chromium) and the unprivileged mail user. Idempotent and non-interactive; package
# post-install scripts must not start the system services (the sandbox runs its own instances on 127.0.0.1), so
# a policy-rc.d that forbids service starts is put in place for the duration of the install if none exists.
# Postfix is installed as "No configuration": no /etc/postfix/main.cf is written and the system's Postfix never
# runs; the sandbox's relay is an instance with its own config directory (postfix -c).
set -euo pipefail

PACKAGES=(dovecot-core dovecot-imapd dovecot-submissiond dovecot-lmtpd bind9 bind9-utils bind9-dnsutils unbound
          nginx-light postfix libsasl2-modules isync openssl
          chromium   # chromium: the browser test of the Prefect UI (tests/flows/test_ui_gate.py)
          postgresql)  # the shared ledger and the Prefect server's database of a distributed run (sandbox postgres)
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
  if [[ " ${missing[*]} " == *" postfix "* ]]; then
    # Debian's postfix replaces any other MTA package: never do that to a machine behind the operator's back.
    other_mta=$(dpkg-query -W -f='${Package} ${Status}\n' exim4-daemon-light exim4-daemon-heavy sendmail-bin \
                opensmtpd msmtp-mta nullmailer ssmtp dma 2>/dev/null | awk '/install ok installed/ {print $1}' || true)
    if [[ -n $other_mta ]]; then
      echo "install-system.sh: installing postfix would remove the installed MTA ($other_mta); install postfix" \
           "yourself if that is fine (apt-get install postfix), then run this again" >&2
      exit 1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  fi
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
