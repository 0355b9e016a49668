"""Parity with NVIDIA's stylegan2-ada-pytorch, when a checkout of it is available.

Set ``NVIDIA_STYLEGAN2_ADA=/path/to/stylegan2-ada-pytorch`` to run; skipped otherwise. Both implementations
are run in subprocesses (they ship same-named packages) through ``bench/gen_harness.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NVIDIA_REPO = os.environ.get("NVIDIA_STYLEGAN2_ADA")

pytestmark = pytest.mark.skipif(
    not (NVIDIA_REPO and (Path(NVIDIA_REPO) / "training" / "networks.py").is_file()),
    reason="set NVIDIA_STYLEGAN2_ADA to a stylegan2-ada-pytorch checkout",
)

CONFIGS = {
    "skip32": dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=512, channel_max=32)),
    "clamp_fp16res": dict(z_dim=16, c_dim=0, w_dim=24, img_resolution=16, img_channels=3,
                          mapping_kwargs=dict(num_layers=3),
                          synthesis_kwargs=dict(channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=0.5)),
    "resnet_gray": dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                        mapping_kwargs=dict(num_layers=2),
                        synthesis_kwargs=dict(channel_base=128, channel_max=8, architecture="resnet")),
}


def harness_dump(impl: str, kwargs: dict, out: Path, load: Path | None = None) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "gen_harness.py"), "dump", "--impl", impl, "--kwargs",
           json.dumps(kwargs), "--seed", "3", "--batch", "3", "--psi", "0.7", "--out", str(out)]
    if impl == "nvidia":
        cmd += ["--repo", NVIDIA_REPO]
    if load is not None:
        cmd += ["--load", str(load)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{impl} harness failed:\n{proc.stderr[-3000:]}"
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_and_split_states_match_nvidia(name, tmp_path):
    kwargs = CONFIGS[name]
    ref = harness_dump("nvidia", kwargs, tmp_path / "nv.pt")
    # A seeded construction draws the same weights in the same order as NVIDIA's.
    ours_seeded = harness_dump("ours", kwargs, tmp_path / "ours_seeded.pt")
    assert list(ours_seeded["state_dict"]) == list(ref["state_dict"])
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(ours_seeded["state_dict"][key], value, rtol=0, atol=0, msg=key)
    # Loading NVIDIA's weights gives NVIDIA's latents, images and per-block states.
    torch.save(ref["state_dict"], tmp_path / "nv_sd.pt")
    ours = harness_dump("ours", kwargs, tmp_path / "ours.pt", load=tmp_path / "nv_sd.pt")
    torch.testing.assert_close(ours["ws"], ref["ws"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["img"], ref["img"], rtol=1e-4, atol=1e-4)
    for k, ((x, img), (x_ref, img_ref)) in enumerate(zip(ours["states"], ref["states"])):
        torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4, msg=f"x after block {k}")
        if img_ref is None:
            assert img is None
        else:
            torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-4, msg=f"img after block {k}")


def test_ffhq_1024_key_parity(tmp_path):
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))
    code = (
        "import sys, json, torch; sys.path.insert(0, sys.argv[1]); from training.networks import Generator; "
        "G = Generator(**json.loads(sys.argv[2])); "
        "print(json.dumps([[k, list(v.shape)] for k, v in G.state_dict().items()]))"
    )
    out = subprocess.run([sys.executable, "-c", code, NVIDIA_REPO, json.dumps(kwargs)], check=True,
                         capture_output=True, text=True).stdout
    ref = [(k, tuple(s)) for k, s in json.loads(out)]
    sys.path.insert(0, str(ROOT))
    from stylegan.networks import Generator

    ours = [(k, tuple(v.shape)) for k, v in Generator(**kwargs).state_dict().items()]
    assert ours == ref
