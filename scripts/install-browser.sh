#!/usr/bin/env bash
# Install Debian's chromium for the browser UI test (distillation_pipeline_tests/test_ui_browser.py)
# if it is missing. Idempotent and quiet when chromium is already there. Playwright drives this
# browser (executable_path); `playwright install` is never used: it downloads a browser build
# of its own, which the package registries do not serve.
# Exit 0 when chromium is usable afterwards, 1 when it could not be installed (the UI test then
# skips and says why).
set -euo pipefail

found() { command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1; }

if found; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: chromium is missing and there is no apt-get here; install chromium by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-browser: chromium is missing; installing it needs root (or sudo)" >&2
    exit 1
  fi
  sudo="sudo -n"
fi
echo "install-browser: installing Debian's chromium (a minute or two the first time)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq chromium >/dev/null
found || { echo "install-browser: chromium was installed but does not start" >&2; exit 1; }
chromium --version 2>/dev/null
