#!/usr/bin/env bash
# Installs the Debian packages the project needs: speech synthesizers for the
# training corpus (espeak-ng, MBROLA voices and RHVoice from contrib/non-free, flite), audio
# tools, and the monitoring tools used by the deployment checks.
# MBROLA lives in contrib/non-free, which the system's sources leave out; we use a
# private sources folder so the machine's apt configuration is never edited.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
PKGS_MAIN="espeak-ng flite fortunes fortunes-min wordnet-base sox libsndfile1 ffmpeg prometheus openssl"
PKGS_NONFREE="mbrola mbrola-us1 mbrola-us3 mbrola-en1"
# other-language MBROLA voices speak English through espeak-ng (mb-<voice>-en): more speakers
PKGS_NONFREE+=" mbrola-af1 mbrola-nl2 mbrola-fr1 mbrola-fr4 mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4"
PKGS_NONFREE+=" mbrola-de5 mbrola-de6 mbrola-gr2 mbrola-hu1 mbrola-pl1 mbrola-ro1 mbrola-sw1 mbrola-sw2"
# and voices whose English voice file we write ourselves (model_export/voices.py, EXTRA_MBROLA)
PKGS_NONFREE+=" mbrola-de7 mbrola-fr2 mbrola-fr3 mbrola-fr5 mbrola-fr6 mbrola-fr7 mbrola-es1 mbrola-es2"
PKGS_NONFREE+=" mbrola-pt1 mbrola-mx2 mbrola-cr1 mbrola-ca1 mbrola-id1 mbrola-ir1 mbrola-mx1 mbrola-ca2 mbrola-gr1"
# RHVoice: statistical parametric English voices, a fourth engine (model_export/voices.py, RHVOICE_*)
PKGS_NONFREE+=" rhvoice rhvoice-english"
# and its Russian, Ukrainian and Kyrgyz voices, which read English with their own phones (voices.RHVOICE_ACCENTED)
PKGS_NONFREE+=" rhvoice-russian rhvoice-ukrainian rhvoice-kyrgyz"

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $PKGS_MAIN >/dev/null

priv=/tmp/stt-apt
mkdir -p "$priv/sources" "$priv/lists/partial" "$priv/cache/archives/partial"
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ]; then
  sed 's/^Components: main$/Components: main contrib non-free/' "$src" > "$priv/sources/debian.sources"
else
  echo "deb http://deb.debian.org/debian bookworm main contrib non-free" > "$priv/sources/debian.list"
fi
opts=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$priv/sources"
      -o Dir::State::Lists="$priv/lists" -o Dir::Cache="$priv/cache")
$SUDO apt-get "${opts[@]}" update -qq
$SUDO apt-get "${opts[@]}" install -y -qq --no-install-recommends $PKGS_NONFREE >/dev/null
echo "system packages installed"
