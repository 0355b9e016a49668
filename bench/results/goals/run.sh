#!/bin/bash
# Focused measurement of issue 10's goal cells: 16 in-range + 16 held-out images, sparse inpainting 10 % and SR x4.
cd /work/main
python - <<'PY'
import random, shutil
from pathlib import Path
src = sorted(Path("images/held_out").glob("*.png")); random.Random(7).shuffle(src)
d = Path("/tmp/goals/ho16"); d.mkdir(exist_ok=True)
for p in src[:16]: shutil.copy(p, d / p.name)
PY
jobs=()
for set in in_range held_out; do
  if [ $set = in_range ]; then IN="input_source=generator num_images=16 seed=1"; else IN="input_folders=[/tmp/goals/ho16] seed=1"; fi
  for task in sparse10 sr4; do
    if [ $task = sparse10 ]; then T="task=inpainting operators.mask=random_pixels operators.observed_fraction=0.1"; else T="task=super_resolution operators.factor=4"; fi
    for m in ${METHODS:-csgm ilo sgilo sgilo_gauss}; do
      if [ $m = csgm ]; then S="steps=[300]"; else S="steps=[100,100,100]"; fi
      [ $m = sgilo ] && S="$S ~calibrated"   # the published settings, as method=sgilo had when this ran
      jobs+=("$set $task $m|$IN $T method=$m $S")
    done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P ${PAR:-2} -I{} bash -c 'j="{}"; name=$(echo "${j%%|*}" | tr " " "_"); args="${j#*|}"; [ -f /tmp/goals/$name/metrics.json ] || python solve_inverse.py $args batch_size=16 progress=false num_threads=1 tensorboard=false hydra.run.dir=/tmp/goals/$name > /tmp/goals/$name.log 2>&1'
python - <<'PY'
import json, statistics as st
from pathlib import Path
rows = {}
for d in sorted(Path("/tmp/goals").iterdir()):
    if not (d / "metrics.json").is_file(): continue
    set_, task, m = d.name.split("_", 2) if d.name.startswith(("in_range", "held_out")) and False else (None, None, None)
    parts = d.name.split("_")
    set_, task, m = "_".join(parts[:2]), parts[2], "_".join(parts[3:])
    p = [i["psnr"] for i in json.loads((d / "metrics.json").read_text())["images"]]
    rows[(set_, task, m)] = (st.mean(p), st.stdev(p) / len(p) ** 0.5, len(p), st.mean(json.loads((d / "metrics.json").read_text())["mean"]["seconds"] for _ in [0]))
for (s, t, m), (mu, se, n, sec) in sorted(rows.items()):
    print(f"{s:9s} {t:9s} {m:12s} {mu:6.2f} ± {se:4.2f} (n={n}, {sec:.1f} s/img)")
PY
