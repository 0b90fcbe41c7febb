#!/usr/bin/env bash
# Rebuild STAGE-mini from nothing: the band corpus, the codec, the two language models, and the
# shipped assets under src/stage/assets/. Every step is seeded; re-running a step continues or
# skips finished work (synth and prepare resume; training steps refuse to overwrite a run unless
# FORCE=1). Run from the repository root in the project's venv:
#
#   bash scripts/build_stage_mini.sh            # everything (about 2 h on 2 CPU cores)
#   STEPS="codec" bash scripts/build_stage_mini.sh
#
# Steps: corpus codec ship-codec decoder tokens drums bass ship-lm. Corpus sizes:
#   data/band-train    160 songs x 30 s, seed 0 (codec and LM training)
#   data/band-heldout   24 songs x 30 s, seed 1 (benchmarks only: never trained on)
#   data/band-long       4 songs x 60 s, seed 2 (the whole-song benchmark row)
set -euo pipefail
STEPS=${STEPS:-"corpus codec ship-codec decoder tokens drums bass ship-lm"}
FORCE_FLAG=$([ "${FORCE:-0}" = 1 ] && echo --force || true)
export OMP_WAIT_POLICY=PASSIVE  # spinning OpenMP threads starve a second process on 2 cores
has() { [[ " $STEPS " == *" $1 "* ]]; }

if has corpus; then
    stage synth --songs 160 --seconds 30 --seed 0 --out data/band-train
    stage synth --songs 24 --seconds 30 --seed 1 --out data/band-heldout
    stage synth --songs 4 --seconds 60 --seed 2 --out data/band-long
    stage prepare data/band-train --format folder --out data/band-train --valid-songs 8
fi

if has codec; then
    stage train-codec --config configs/mini-codec.yaml --out runs/mini-codec $FORCE_FLAG
    stage train-codec --resume runs/mini-codec --config configs/mini-codec-bass.yaml
fi

if has ship-codec; then  # fp16 safetensors inside the package (the Codec loader casts to fp32)
    python - <<'EOF'
import torch
from transformers import EncodecModel
from stage.train.codec import save_codec
model = EncodecModel.from_pretrained("runs/mini-codec/model")
save_codec(model, "src/stage/assets/stage-mini-codec", dtype=torch.float16)
EOF
fi

# Phase 3: the shipped codec's decoder alone, fine-tuned for the bass (configs/mini-codec-decoder.yaml).
# The encoder and codebooks are frozen, so the codes (and the tokens below) are those of phase 2.
if has decoder; then
    stage train-codec --config configs/mini-codec-decoder.yaml --out runs/mini-codec-decoder $FORCE_FLAG
    python - <<'EOF'
import torch
from transformers import EncodecModel
from stage.train.codec import save_codec
model = EncodecModel.from_pretrained("runs/mini-codec-decoder/model")
save_codec(model, "src/stage/assets/stage-mini-codec", dtype=torch.float16)
EOF
fi

mkdir -p runs
if has tokens; then  # each song encoded once, 64 aligned 5 s windows cut from its codes
    stage tokenize data/band-train --model mini --stem drums --per-song 64 --seed 0 \
        --sample window_seconds=5 metronome_prob=0.5 --out data/mini-drums-tokens $FORCE_FLAG
    stage tokenize data/band-train --model mini --stem bass --per-song 64 --seed 0 \
        --sample window_seconds=5 metronome_prob=0 --out data/mini-bass-tokens $FORCE_FLAG
    stage tokenize data/band-train --model mini --stem drums --per-song 8 --seed 1 --split valid \
        --sample window_seconds=5 metronome_prob=0.5 --out data/mini-drums-val $FORCE_FLAG
    stage tokenize data/band-train --model mini --stem bass --per-song 8 --seed 1 --split valid \
        --sample window_seconds=5 metronome_prob=0 --out data/mini-bass-val $FORCE_FLAG
fi

# One model at a time with both cores (~3.4 s a step for drums); two at once halve each other.
for stem in drums bass; do
    if has $stem; then
        stage train --config configs/mini-$stem.yaml --out runs/mini-$stem --quiet $FORCE_FLAG \
            > runs/mini-$stem.log 2>&1
    fi
done

if has ship-lm; then  # thin fp16 checkpoints naming the bundled codec and text encoder
    for stem in drums bass; do
        if [ -d runs/mini-$stem/model ]; then
            stage convert runs/mini-$stem/model --out src/stage/assets/stage-mini-$stem --stem $stem \
                --dtype float16 --no-bundle --force
        else
            echo "ship-lm: runs/mini-$stem/model does not exist (train it first); skipping $stem" >&2
        fi
    done
fi
