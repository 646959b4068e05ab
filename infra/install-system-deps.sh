#!/usr/bin/env bash
# Installs the system packages sohoa needs on Debian/Ubuntu; idempotent (skips what is there).
#   PostgreSQL server, Tesseract with Vietnamese + English (the OCR engine loads libtesseract),
#   Ghostscript (its CMYK profile for PDF/A; ocrmypdf in the bench), poppler-utils, Prometheus
#   (+ promtool), DejaVu fonts (Vietnamese glyphs in charts), Liberation fonts 2.x
#   (Liberation Serif: Times New Roman's metrics with every Vietnamese letter, embedded in the
#   PDF reports, whose forms prescribe Times New Roman), a JDK for Kafka and veraPDF,
#   Maven to fetch the Kafka and veraPDF jars, jbig2dec (pikepdf decodes a PDF's JBIG2 page
#   images with it: many document scanners write bilevel pages as JBIG2), Liberation fonts
#   (Liberation Serif: metric-compatible with Times New Roman, for Art. 8's signature text
#   where Times New Roman is not installed), SoftHSM2 (a PKCS#11 token for the signing tests;
#   sites use USB tokens),
#   Alertmanager (+ amtool: the routing tests, `make run`'s alerts), Chromium and ChromeDriver
#   (the headless browser test of `sohoa web`; no test tool downloads a browser of its own),
#   Go (builds the object store, SeaweedFS, from its Go module once: infra/objects.py).
# Usage: sudo infra/install-system-deps.sh        (DRY_RUN=1 to only print what it would do)
set -euo pipefail

say() { printf '%s\n' "$*"; }

if ! command -v apt-get >/dev/null 2>&1; then
  say "Không có apt-get: hãy tự cài postgresql, tesseract-ocr (+vie, eng), ghostscript,"
  say "poppler-utils, jbig2dec, prometheus, fonts-dejavu-core, fonts-liberation, fonts-liberation2,"
  say "softhsm2, prometheus-alertmanager, chromium, chromium-driver, JDK 17+, maven,"
  say "Go >= 1.26.6. (not a Debian/Ubuntu system)"
  exit 1
fi

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want() { have_pkg "$1" || missing+=("$1"); }

# PostgreSQL: any server version under /usr/lib/postgresql will do.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
want tesseract-ocr
want tesseract-ocr-vie
want tesseract-ocr-eng
want tesseract-ocr-osd   # orientation detection of pages read sideways or upside down
want ghostscript
want poppler-utils
want jbig2dec
want fonts-dejavu-core
want fonts-liberation
want fonts-liberation2
want softhsm2
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || want prometheus
command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 \
  || want prometheus-alertmanager
command -v chromium >/dev/null 2>&1 || want chromium
command -v chromedriver >/dev/null 2>&1 || want chromium-driver
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v go >/dev/null 2>&1 || missing+=(golang-go)

if [ ${#missing[@]} -eq 0 ]; then
  say "Đã đủ gói hệ thống (all system packages present)."
  exit 0
fi
say "Cần cài (to install): ${missing[*]}"
if [ "${DRY_RUN:-0}" = "1" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  say "Cần quyền root: chạy lại bằng sudo $0  (root needed to install packages)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are missing or the install cannot find a package.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -q
fi
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  say "apt-get install thất bại; cập nhật danh sách gói rồi thử lại (apt-get update)…"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts a system-wide cluster with the package; sohoa runs its own private one
# (`sohoa up`), so the default cluster is left as the package set it up.
say "Đã cài xong (installed): ${missing[*]}"
