# Sourced by test.sh: the dashboard's browser test drives Debian's Chromium (/usr/bin/chromium).
# Installed with apt when missing and running as root; otherwise say how, and stop.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (apt) for the browser test" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "error: the browser test needs Debian's Chromium; install it with" >&2
    echo "    sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
