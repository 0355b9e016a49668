#!/bin/bash
# Calibration probe on in-range references with seed 777 (not the reported seed 1): sparse inpainting 10 %.
cd /work/main
T="task=inpainting operators.mask=random_pixels operators.observed_fraction=0.1"
IN="input_source=generator num_images=16 seed=777"
R0="latent_init=zeros project_latent=false project_noises=false"
cat > /tmp/cal/jobs.txt <<J
csgm500|method=csgm steps=[500]
ilo_r0|method=ilo steps=[300,100,100] $R0 radius=[100,100,400,1600]
gauss_t01_r0|method=sgilo_gauss steps=[300,100,100] $R0
gauss_t1_r0|method=sgilo_gauss steps=[300,100,100] $R0 gen_temperature=[0,1,1,1] latent_temperature=1
gauss_t3_r0|method=sgilo_gauss steps=[300,100,100] $R0 gen_temperature=[0,3,3,3] latent_temperature=3
gvit_t1_r0|method=sgilo ~calibrated steps=[300,100,100] $R0 gen_temperature=[0,1,1,1] latent_temperature=1
J
cat /tmp/cal/jobs.txt | xargs -P 2 -I{} bash -c 'j="{}"; name="${j%%|*}"; args="${j#*|}"; [ -f /tmp/cal/$name/metrics.json ] || python solve_inverse.py $args '"$T $IN"' batch_size=16 progress=false num_threads=1 tensorboard=false hydra.run.dir=/tmp/cal/$name > /tmp/cal/$name.log 2>&1'
for d in /tmp/cal/*/; do n=$(basename $d); python -c "
import json,statistics as s
m=json.load(open('$d/metrics.json')); I=m['images']; R=len(I[0]['rounds'])
p=[i['psnr'] for i in I]
print(f'$n {s.mean(p):.2f} ± {s.stdev(p)/len(p)**.5:.2f}', [round(s.mean(i['rounds'][r]['psnr'] for i in I),2) for r in range(R)])"; done
