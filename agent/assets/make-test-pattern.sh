#!/usr/bin/env bash
# Regenerates test-pattern.ivf: 3 s of ffmpeg's moving `testsrc2` pattern, 320x240 at 30 fps,
# VP8 with a key frame every half second (a late viewer starts quickly), ~250 kbit/s.
# The agent loops it as its camera; only this script needs ffmpeg (Debian's `ffmpeg`).
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=30 -t 3 \
  -c:v libvpx -b:v 250k -g 15 -keyint_min 15 -auto-alt-ref 0 -lag-in-frames 0 \
  -f ivf test-pattern.ivf
