#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine, and nothing twice:
#  - Debian packages when they are missing: PostgreSQL's server, Chromium and its driver, R
#    with the dashboard's r-cran-* packages, debootstrap, systemd-nspawn and zstd;
#  - the Python virtualenv in .venv from the pinned requirements.txt, rebuilt only
#    when requirements.txt changes;
#  - the security scanners' virtualenv in .venv-security from requirements-security.txt, the
#    same way (checkov pins boto3 and packaging versions that clash with requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
SECURITY_VENV=${SECURITY_VENV:-.venv-security}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(postgresql postgresql-contrib)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("${APT_PACKAGES[@]}")
# The browser tests drive Debian's Chromium (no browser download is reachable).
command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
# The dashboard tests serve the Shiny app with Debian's R and packages (CRAN is not reachable);
# the same list as roles/r_shiny's r_shiny_packages.
for package in r-base-core r-cran-shiny r-cran-dbi r-cran-rpostgresql r-cran-ggplot2 r-cran-dt r-cran-bslib; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# The role tests boot real systemd hosts: debootstrap + systemd-nspawn, images kept as .tar.zst;
# the controller signs the package mirror's snapshots with gpg (playbooks/package_mirror.yml).
for need in debootstrap:debootstrap systemd-nspawn:systemd-container zstd:zstd gpg:gnupg; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # The package's own cluster is not used: the tests start private clusters.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ensure_venv VENV REQUIREMENTS: (re)build VENV from the pinned REQUIREMENTS file, only when that
# file changed since the last build (its sha256 is kept in the virtualenv).
ensure_venv() {
  local venv=$1 requirements=$2
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: creating $venv from $requirements"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

ensure_venv "$VENV" requirements.txt
ensure_venv "$SECURITY_VENV" requirements-security.txt

# A real account's DWH host is configured over Session Manager (amazon.aws.aws_ssm), which runs
# AWS's session-manager-plugin on the controller. AWS's download site cannot be reached from our
# machines, and the tests and the local platform do not need it (their instance is reached
# through the nspawn connection): say so rather than install it. README, "Provisioning".
if ! command -v session-manager-plugin >/dev/null && [ ! -x /usr/local/bin/session-manager-plugin ]; then
  echo "bootstrap: no session-manager-plugin: needed only to configure a real account's DWH host (README, Provisioning)"
fi
