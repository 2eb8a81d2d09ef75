#!/usr/bin/env bash
# Installs the Debian packages the test suite runs, when any is missing (a no-op otherwise):
#   chromium        the UI test (Playwright drives Debian's Chromium; it downloads no browser)
#   docker-compose  validates docker-compose.yml (`config -q`; no Docker engine needed)
#   postgresql, redis-server  the Celery test runs the compose stack's services natively
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
