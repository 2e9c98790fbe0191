#!/usr/bin/env bash
# Fills a zoo folder for `QatMl.Benchmarks zoo <folder>` (build/zoo-fetch.md lists every file, its source and licence):
#   1. downloads the public models, their licences and the real photos/speech clips, pinned to commits and
#      checked by SHA-256 (skipped with --no-download, for a folder filled by other means);
#   2. renders the OCR inputs (text lines and paragraphs, ImageMagick with DejaVu fonts) and speech clips
#      (espeak-ng, resampled to 16 kHz mono with sox).
# The NuGet-shipped models (ResNet18, MiniLM, Arctic-xs) need nothing here: they restore with the benchmark project.
# Needs: curl, sha256sum, ImageMagick (convert), fonts-dejavu, espeak-ng, sox.
# Usage: build/zoo-fetch.sh <zoo folder> [--no-download]
set -euo pipefail
zoo=${1:?usage: build/zoo-fetch.sh <zoo folder> [--no-download]}
download=1
[[ "${2:-}" == "--no-download" ]] && download=0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$zoo"
zoo=$(cd "$zoo" && pwd)

for tool in convert espeak-ng sox; do
  command -v "$tool" > /dev/null || { echo "zoo-fetch: '$tool' is missing (Debian: apt-get install imagemagick fonts-dejavu espeak-ng sox)" >&2; exit 1; }
done

# fetch <repo> <commit> <path in repo> <target> [sha256]: one file, written under a temporary name, checked, renamed.
fetch() {
  local repo=$1 commit=$2 path=$3 target=$4 sum=${5:-}
  [[ -s "$zoo/$target" ]] && return 0
  mkdir -p "$(dirname "$zoo/$target")"
  curl -fsSL --retry 3 -o "$zoo/$target.part" "https://raw.githubusercontent.com/$repo/$commit/$path"
  if [[ -n "$sum" ]] && ! echo "$sum  $zoo/$target.part" | sha256sum -c --status; then
    rm -f "$zoo/$target.part"
    echo "zoo-fetch: $repo/$path does not have the expected SHA-256" >&2
    exit 1
  fi
  mv "$zoo/$target.part" "$zoo/$target"
}

if (( download )); then
  ocr=BobLd/RapidOcrNet; ocr_commit=03dad4463f1803915f0efdfe677348cb201d181e
  fetch $ocr $ocr_commit RapidOcrNet/models/en_PP-OCRv3_det_infer.onnx ppocr-det/en_PP-OCRv3_det_infer.onnx 2591e1ef06e79c8d79ab5873982a8ee8b398d1d79c0209e013bc918e68647f5b
  fetch $ocr $ocr_commit RapidOcrNet/models/ch_ppocr_mobile_v2.0_cls_infer.onnx ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx afedd3e449379354e0934c1437df80388af6cac640e543244f5594c3e965cd99
  fetch $ocr $ocr_commit LICENSE.txt ppocr-det/LICENSE.txt
  fetch $ocr $ocr_commit LICENSE.txt ppocr-cls/LICENSE.txt

  vad=snakers4/silero-vad; vad_commit=806dcba3f0b5d95282d0889a074954a2f8c6397b
  fetch $vad $vad_commit src/silero_vad/data/silero_vad.onnx silero-vad/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3
  fetch $vad $vad_commit LICENSE silero-vad/LICENSE

  face=Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB; face_commit=dffdddda9794a50607cba8f318507a28c1c27cab
  fetch $face $face_commit models/onnx/version-RFB-320.onnx ultraface/version-RFB-320.onnx 34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017
  fetch $face $face_commit LICENSE ultraface/LICENSE
  for i in 1 2 3 5 6 8 10 11 12 13 15 16 17 18 19 20 22 23 24 25 26 27; do
    fetch $face $face_commit imgs/$i.jpg faces/$i.jpg
  done

  sr=JSmith01/sesr-js; sr_commit=ecc15c1395415fb01a1e48067ff890b15fe3562d
  fetch $sr $sr_commit qai-hub/xlsr-2x-360p.onnx super-resolution/xlsr-2x-360p.onnx 07dcbca8d4d66662af92111b7563ce2b6d3a2eef3a387ab5af12749a8fc6cbb0
  fetch $sr $sr_commit README.md super-resolution/README-source.md

  wake=dscripka/openWakeWord; wake_commit=368c03716d1e92591906a84949bc477f3a834455
  fetch $wake $wake_commit LICENSE audio/LICENSE
  for clip in tests/data/alexa_test.wav tests/data/hey_jane.wav tests/data/hey_mycroft_test.wav examples/audio/activation.wav \
              notebooks/training_tutorial_data/turn_on_the_office_lights_test_clip.wav notebooks/training_tutorial_data/negative/negative_reference.wav; do
    fetch $wake $wake_commit "$clip" "audio/$(basename "$clip")"
  done
fi

# Text for the OCR inputs: the zoo's sentences (also the sentence encoders' rows).
mapfile -t lines < <(grep -v '^#' "$root/benchmarks/QatMl.Benchmarks/Zoo/sentences.txt" | grep .)
fonts=(DejaVu-Sans DejaVu-Serif DejaVu-Sans-Mono DejaVu-Sans-Bold DejaVu-Serif-Italic DejaVu-Sans-Condensed)
inks=(black "#202840" "#402010" "#303030")
papers=(white "#f4f1e8" "#e8eef4" "#fafafa")

# Text-direction classifier: one line of text per 192x48 image; every other one upside down (file name ends in _180).
mkdir -p "$zoo/text/cls"
for i in $(seq 0 79); do
  line=${lines[$((i % ${#lines[@]}))]}
  words=$(echo "$line" | cut -d' ' -f1-4)
  angle=$(( i % 2 == 0 ? 0 : 180 ))
  out="$zoo/text/cls/line$(printf %03d "$i")_$angle.png"
  [[ -s "$out" ]] && continue
  convert -size 192x48 "xc:${papers[$((i % 4))]}" -font "${fonts[$((i % 6))]}" -pointsize $(( 15 + i % 5 )) \
    -fill "${inks[$((i % 4))]}" -gravity west -annotate +6+0 "$words" -rotate "$angle" "$out.part.png"
  mv "$out.part.png" "$out"
done

# Text detector: 320x160 pages with two to four lines at varying places and sizes.
mkdir -p "$zoo/text/det"
for i in $(seq 0 79); do
  out="$zoo/text/det/page$(printf %03d "$i").png"
  [[ -s "$out" ]] && continue
  args=()
  count=$(( 2 + i % 3 ))
  for j in $(seq 0 $((count - 1))); do
    line=${lines[$(((i * 3 + j) % ${#lines[@]}))]}
    words=$(echo "$line" | cut -d' ' -f1-$(( 3 + (i + j) % 4 )))
    args+=(-pointsize $(( 14 + (i + j) % 8 )) -annotate +$(( 8 + (i * 7 + j * 13) % 40 ))+$(( 30 + j * 34 )) "$words")
  done
  convert -size 320x160 "xc:${papers[$((i % 4))]}" -font "${fonts[$((i % 6))]}" -fill "${inks[$((i % 4))]}" "${args[@]}" "$out.part.png"
  mv "$out.part.png" "$out"
done

# Speech for the VAD: espeak-ng voices reading the sentences with pauses, 16 kHz mono 16-bit.
mkdir -p "$zoo/audio"
voices=(en-us en-gb en-us+f3 en-gb+m3 en-us+f2 en-gb-x-rp)
for i in $(seq 0 11); do
  out="$zoo/audio/speech$(printf %02d "$i").wav"
  [[ -s "$out" ]] && continue
  raw="$zoo/audio/speech$(printf %02d "$i").raw.wav"
  espeak-ng -v "${voices[$((i % 6))]}" -s $(( 140 + i * 5 )) -w "$raw" "${lines[$((i * 2))]} ${lines[$((i * 2 + 1))]}"
  sox "$raw" -r 16000 -c 1 -b 16 "$out.part.wav" pad 0.4 0.6
  mv "$out.part.wav" "$out"
  rm -f "$raw"
done
# The downloaded clips at 16 kHz mono as well (they are already; sox only checks and normalises the header).
for clip in "$zoo"/audio/*.wav; do
  rate=$(soxi -r "$clip"); channels=$(soxi -c "$clip")
  if [[ "$rate" != 16000 || "$channels" != 1 ]]; then
    sox "$clip" -r 16000 -c 1 -b 16 "$clip.part.wav" && mv "$clip.part.wav" "$clip"
  fi
done
echo "zoo-fetch: $zoo is ready ($(find "$zoo" -type f | wc -l) files)"
