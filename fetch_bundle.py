"""Fetch the published SGILO checkpoint bundle (FFHQ-1024), unpack it at the repository root and check it.

    python fetch_bundle.py                 # download (gdown, about 1.7 GB), unzip, check the expected files
    python fetch_bundle.py --check         # only check an already unpacked bundle
    python fetch_bundle.py --zip FILE      # unpack and check a zip fetched by other means

The expected files are the ones the configs name (``configs/generator/ffhq.yaml`` and the published
``configs/trained_networks/*.yaml``; see ``checkpoints/README.md``). The zip is kept in the cache folder
(``$SGILO_CACHE`` or ``~/.cache/sgilo``), so a second run does not download again. Files already at the
repository root are never overwritten. Every failure is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

from omegaconf import OmegaConf

from dnnlib.util import DownloadError, cache_dir, download
from score.prior import published_path
from utils import ROOT

DRIVE_ID = "1GaFjosEsZhrt6xDd3YctR3EVSGFnlAOP"
PUBLISHED_PRIORS = ("latent", "layer1", "layer2", "layer3", "syn_layer3")


def expected_files() -> list[str]:
    """Repository-relative paths of the bundle's files, as the configs name them."""
    generator = OmegaConf.load(ROOT / "configs" / "generator" / "ffhq.yaml")
    paths = [generator.ckpt, generator.gaussian_fit]
    paths += [OmegaConf.load(ROOT / "configs" / "trained_networks" / f"{name}.yaml").ckpt for name in PUBLISHED_PRIORS]
    return [str(p) for p in paths]


def missing_files(root: Path = ROOT) -> list[str]:
    """The expected files not found (a prior may sit under ``score_based/vp/`` instead of ``vp_sde/``)."""
    return [p for p in expected_files() if not published_path(p, lambda q: root / q).is_file()]


def unpack(archive: Path, root: Path = ROOT) -> int:
    """Extract the members of ``archive`` that belong under ``checkpoints/`` without replacing existing files."""
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = Path(member.filename).parts
                if member.is_dir() or "checkpoints" not in parts or ".." in parts:
                    continue
                target = root / Path(*parts[parts.index("checkpoints"):])  # tolerate a top-level folder
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst)
                written += 1
    except (zipfile.BadZipFile, OSError) as exc:
        raise SystemExit(f"error: cannot unpack {archive}: {exc}") from None
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check the unpacked files")
    parser.add_argument("--zip", type=Path, help="a copy of the bundle zip (skips the download)")
    parser.add_argument("--root", type=Path, default=ROOT, help="where checkpoints/ goes (default: this repository)")
    args = parser.parse_args(argv)
    if not args.check:
        archive = args.zip
        if archive is None:
            try:
                archive = download(DRIVE_ID, cache_dir("sgilo_checkpoints.zip"))
            except DownloadError as exc:
                raise SystemExit(f"error: could not download the bundle (no network?): {exc}") from None
        elif not archive.is_file():
            raise SystemExit(f"error: --zip {archive}: no such file")
        print(f"unpacked {unpack(archive, args.root)} new file(s) from {archive}")
    missing = missing_files(args.root)
    if missing:
        raise SystemExit(f"error: the bundle is incomplete: missing {', '.join(missing)}")
    print(f"all {len(expected_files())} bundle files are in place; try: python solve_inverse.py generator=ffhq "
          "method=sgilo task=inpainting input_source=folders")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise
