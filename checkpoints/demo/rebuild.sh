#!/usr/bin/env bash
# Rebuild every file of the demo that depends on its generator, from checkpoints/demo/generator.pt.
#
# Every prior, fit and network here is tied to the generator it was made with: after a new generator.pt (e.g.
# `python train_stylegan.py steps=<N> resume=<run>/checkpoints/step_<N>.pt` writes one in its run dir), remove
# the files derived from the old one and run this script from the repository root:
#
#     git rm -q checkpoints/demo/{gaussian_fit,gauss_*,prior_*,inv_gauss_*,landscape}.pt checkpoints/mixture/*.pt
#     bash checkpoints/demo/rebuild.sh            # 40 min to ~2 h on 2 CPU cores; DRY_RUN=1 prints the commands only
#
# The script never overwrites a file: a stage whose output exists is skipped, so after an interruption the same
# command continues with what is missing. Scratch runs go to outputs/rebuild_demo/ (a stage clears its own run
# folder before it starts). The commands and settings are the ones of checkpoints/demo/README.md; two jobs run
# side by side with one thread each. The layer shapes come from the generator (prior.image_shape=null), so a
# generator with other widths works too; update image_shape in configs/trained_networks/demo_*.yaml to match.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO=checkpoints/demo
MIX=checkpoints/mixture
RUNS=outputs/rebuild_demo
PY=${PYTHON:-python3}

run() {  # run CMD...: print it, then run it unless DRY_RUN is set
    echo "+ $*"
    if [[ -z "${DRY_RUN:-}" ]]; then "$@"; fi
}
missing() {  # missing FILE: true if FILE has to be made (with DRY_RUN: always, to show every command)
    [[ -n "${DRY_RUN:-}" || ! -e "$1" ]]
}
fresh_dir() {  # fresh_dir DIR: an empty scratch run folder
    run rm -rf "$1"
}
side_by_side() {  # side_by_side "CMD1" "CMD2": run both at once; fail if either fails
    local a b
    $1 & a=$!
    $2 & b=$!
    wait $a && wait $b
}

[[ -f $DEMO/generator.pt ]] || { echo "error: $DEMO/generator.pt not found: put the generator there first" >&2; exit 1; }
mkdir -p "$RUNS" "$MIX"

# 1. The Gaussianised-latent fit (seconds).
if missing $DEMO/gaussian_fit.pt; then
    run $PY -m stylegan.proxy $DEMO/generator.pt $DEMO/gaussian_fit.pt
fi

# 2. Gaussian priors with exact scores (seconds each): the floor of the learned ones.
for n in latent layer1 layer2; do
    if missing $DEMO/gauss_$n.pt; then
        run $PY -m score.gaussian configs/trained_networks/demo_gauss_$n.yaml $DEMO/gauss_$n.pt --samples 8192
    fi
done
if missing $DEMO/gauss_layer3.pt; then
    run $PY -m score.gaussian configs/trained_networks/demo_gauss_layer3.yaml $DEMO/gauss_layer3.pt --samples 4096
fi
if missing $DEMO/gauss_pixel.pt; then  # on the train-split images: does not depend on the generator
    run $PY -m score.gaussian configs/trained_networks/demo_gauss_pixel.yaml $DEMO/gauss_pixel.pt --samples 5000
fi

# 3. Learned Gaussian-residual ViT priors on G1(z) features, two trainings at a time (~40 min).
train_prior() {  # train_prior NAME STEPS
    local name=$1 steps=$2 dir=$RUNS/prior_$1
    missing $DEMO/prior_$name.pt || return 0
    fresh_dir "$dir"
    run $PY train_score.py trained_networks=demo_$name device=cpu num_threads=1 batch_size=64 steps=$steps \
        prior.image_shape=null progress=false hydra.run.dir="$dir"
    run $PY -m score.prior "$dir/prior.pt" $DEMO/prior_$name.pt
}
side_by_side "train_prior latent 2000" "train_prior layer2 1500"
side_by_side "train_prior layer1 2000" "train_prior layer3 800"

# 4. Priors on inverted train-split images (the published priors' kind of data): 2,048 train emoji (a seeded
#    draw) inverted fully observed by ILO to layer 2, split over two processes (~21 min), then a Gaussian and a
#    two-source mixture per layer fitted on the saved layer-1/2 features (seconds each).
inverted=("$RUNS/invert_train/a" "$RUNS/invert_train/b")
need_inversion=""
for L in 1 2; do
    if missing $DEMO/inv_gauss_layer$L.pt || missing $MIX/mix_gauss_layer$L.pt; then need_inversion=1; fi
done
if [[ -n $need_inversion && ( -n "${DRY_RUN:-}" || ! -f $RUNS/invert_train/done ) ]]; then
    fresh_dir "$RUNS/invert_train"
    fresh_dir "$RUNS/train_subset"
    run $PY - "$RUNS/train_subset" <<'EOF'
import os, random, sys
from pathlib import Path
src = sorted(Path(os.path.expanduser("~/.cache/sgilo/emoji/faces32/train")).glob("*.png"))
if not src:
    raise SystemExit("error: no train-split emoji in ~/.cache/sgilo/emoji/faces32: run python -m data.emoji first")
random.Random(0).shuffle(src)
for i, p in enumerate(src[:2048]):
    d = Path(sys.argv[1]) / "ab"[i % 2]
    d.mkdir(parents=True, exist_ok=True)
    (d / p.name).symlink_to(p)
EOF
    invert() {  # invert HALF
        run $PY solve_inverse.py method=ilo task=denoising operators.noise_std=0 'steps=[100,100,100]' \
            'radius=[100,100,400,1600]' seed=11 "input_folders=[$RUNS/train_subset/$1]" batch_size=16 \
            save_latent=true save_images=false progress=false num_threads=1 tensorboard=false \
            hydra.run.dir="$RUNS/invert_train/$1"
    }
    side_by_side "invert a" "invert b"
    run touch "$RUNS/invert_train/done"
fi
for L in 1 2; do
    if missing $DEMO/inv_gauss_layer$L.pt; then
        run $PY -m score.gaussian configs/trained_networks/demo_inv_gauss_layer$L.yaml $DEMO/inv_gauss_layer$L.pt \
            --latents "${inverted[@]}" --samples 2048
    fi
    if missing $MIX/mix_gauss_layer$L.pt; then
        run $PY -m score.gaussian configs/trained_networks/demo_mix_gauss_layer$L.yaml $MIX/mix_gauss_layer$L.pt \
            --latents "${inverted[@]}" --samples 2048
    fi
done

# 5. The landscape network θ of method=landscape (~30 min on one thread).
if missing $DEMO/landscape.pt; then
    fresh_dir "$RUNS/landscape"
    run $PY train_landscape.py progress=false hydra.run.dir="$RUNS/landscape"
    run cp "$RUNS/landscape/landscape.pt" $DEMO/landscape.pt
fi

echo "done: every derived file of $DEMO is there; re-measure the tables (README, 'The demo')"
