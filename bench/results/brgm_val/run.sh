cd /work/main
for task in inpainting super_resolution; do
for v in "default|" "w12|brgm.w=12.5" "noprior|brgm.w=0 brgm.colin=0" "w1000|brgm.w=1000" "steps1000|brgm.steps=1000" "csgm|"; do
  name=${v%%|*}; extra=${v#*|}
  m=brgm; [ $name = csgm ] && m=csgm
  st="brgm.steps=300"; [ $m = csgm ] && st="steps=[300]"
  python solve_inverse.py method=$m $st $extra task=$task input_folders=[images/val/] max_images=16 batch_size=16 seed=1 progress=false num_threads=1 save_images=false tensorboard=false hydra.run.dir=${OUT:-/tmp/brgm_val}/${task}_$name > /dev/null 2>&1
  python -c "import json;d=json.load(open('${OUT:-/tmp/brgm_val}/${task}_$name/metrics.json'));print('$task $name', round(d['mean']['psnr'],2), round(d.get('std',{}).get('psnr',0) or 0,2))"
done; done
