"""The demo's image domain: emoji faces from the npm packages of the emoji-datasource project, at 32 px.

    python -m data.emoji                          # fetch, check and prepare (cached; a second call reuses it)
    python -m data.emoji --export images          # + write the val and held-out splits as PNGs under images/

Source. ``emoji-datasource-<vendor>@16.0.0`` ships one 64 px RGBA PNG per emoji and skin tone, and
``emoji.json`` describing them (name, category, skin variations). The default vendors are Google (Noto Emoji,
Apache-2.0) and Twitter (Twemoji, CC-BY 4.0); the default categories are *Smileys & Emotion* and
*People & Body*. Each tarball is fetched with ``npm pack NAME@VERSION`` (or, without npm, over HTTPS from the
registry) and checked against its pinned sha256 before anything is read from it.

Images. The RGBA art is composited on white and resized with Lanczos antialiasing to ``resolution`` px.

Splits, by identity. The identity of an image is the base code point sequence (``unified`` in
``emoji.json``, lower case) of its emoji: all skin tones and both vendors' versions of an emoji share it, so
they always fall in the same split. The split is a pure function of that string (:func:`split_of`):
``h = first 8 bytes of sha256(identity) as a big-endian integer mod 1000``; train if h < 850, val if
h < 900, held-out otherwise (85 / 5 / 10 %).

Output (under ``<cache>/emoji/<name>/``, default cache ``$SGILO_CACHE`` or ``~/.cache/sgilo``): one folder
per split in NVIDIA's dataset_tool layout (PNGs + ``dataset.json`` with ``"labels": null``), readable by
:class:`data.images.ImageDataset` and by NVIDIA's own training code, and ``manifest.json`` (one record per
image: file, split, identity, name, category, vendor, skin tone; the package versions and checksums).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data.images import on_white
from dnnlib.util import DownloadError, cache_dir, download, sha256sum


@dataclass(frozen=True)
class EmojiPackage:
    """One pinned npm package of emoji artwork."""

    vendor: str  # Key of the art in emoji.json ('has_img_<vendor>') and folder under img/.
    name: str  # npm package name.
    version: str  # Pinned version.
    sha256: str  # Checksum of the tarball `npm pack` writes.
    licence: str  # Licence of the artwork.
    registry: str = "https://registry.npmjs.org"  # Where npm (or the HTTPS fallback) fetches it from.

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{self.registry}/{self.name}/-/{self.tarball_name}"


PACKAGES = {
    "google": EmojiPackage("google", "emoji-datasource-google", "16.0.0",
                           "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
                           "Noto Emoji artwork, Apache License 2.0 (https://github.com/googlefonts/noto-emoji)"),
    "twitter": EmojiPackage("twitter", "emoji-datasource-twitter", "16.0.0",
                            "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
                            "Twemoji artwork, Copyright Twitter Inc. and other contributors, CC-BY 4.0 "
                            "(https://github.com/jdecked/twemoji)"),
}
DEFAULT_VENDORS = ("google", "twitter")
FACE_CATEGORIES = ("Smileys & Emotion", "People & Body")
SPLITS = ("train", "val", "held_out")
SPLIT_BOUNDS = (850, 900)  # h < 850: train, h < 900: val, else held_out (h in [0, 1000))
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark",
              "1F3FF": "dark"}
MANIFEST_FORMAT = "sgilo.emoji_dataset"


class EmojiDataError(Exception):
    """Fetching or preparing the emoji data failed (reported as one ``error:`` line by the command line)."""


def split_of(identity: str) -> str:
    """The split ('train', 'val' or 'held_out') of an emoji identity (its base ``unified`` code, lower case)."""
    h = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") % 1000
    return "train" if h < SPLIT_BOUNDS[0] else "val" if h < SPLIT_BOUNDS[1] else "held_out"


# ---------------------------------------------------------------------------------------------------------------------
# Fetching.


def _npm_pack(package: EmojiPackage, folder: Path) -> None:
    subprocess.run(["npm", "pack", package.spec, "--pack-destination", str(folder), "--silent",
                    "--registry", package.registry, "--fetch-retries", "1"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)


def _https_download(package: EmojiPackage, folder: Path) -> None:
    download(package.url, folder / package.tarball_name)  # the checksum is checked by the caller, for npm's too


def fetch_package(package: EmojiPackage, folder: Path) -> Path:
    """The package's tarball in ``folder``, fetched if absent, always checked against its sha256.

    Raises:
        EmojiDataError: no network / registry, or a checksum that differs (the file is then removed).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / package.tarball_name
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            errors = []
            for how in ((_npm_pack,) if shutil.which("npm") else ()) + (_https_download,):
                try:
                    how(package, Path(tmp))
                    break
                except (OSError, subprocess.SubprocessError, DownloadError) as exc:
                    detail = getattr(exc, "stderr", None)
                    detail = detail.decode(errors="replace").strip().splitlines()[-1:] if detail else []
                    errors.append(f"{how.__name__.strip('_')}: {detail[0] if detail else exc}")
            else:
                raise EmojiDataError(f"cannot fetch {package.spec} (no network or registry?): {'; '.join(errors)}")
            os.replace(Path(tmp) / package.tarball_name, path)
    digest = sha256sum(path)
    if digest != package.sha256:
        path.unlink()
        raise EmojiDataError(f"{package.tarball_name}: sha256 {digest} differs from the pinned {package.sha256}; "
                             "the file was removed")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Preparing.


def to_rgb(png: bytes, resolution: int) -> Image.Image:
    """RGBA emoji art -> RGB on white, resized with Lanczos antialiasing to (resolution, resolution)."""
    with Image.open(io.BytesIO(png)) as art:
        rgb = on_white(art.convert("RGBA"))
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return rgb


def emoji_records(catalogue: list[dict], vendor: str, categories: tuple[str, ...]) -> list[dict]:
    """One record per image of ``vendor`` in ``categories``: the emoji itself and each of its skin variations."""
    records = []
    for emoji in catalogue:
        if emoji.get("category") not in categories:
            continue
        identity = emoji["unified"].lower()
        base = {"identity": identity, "name": (emoji.get("name") or emoji["short_name"]).lower(),
                "short_name": emoji["short_name"], "category": emoji["category"],
                "subcategory": emoji.get("subcategory"), "vendor": vendor, "split": split_of(identity)}
        variants = [(emoji, "none")]
        for key, variation in sorted((emoji.get("skin_variations") or {}).items()):
            variants.append((variation, "-".join(SKIN_TONES.get(k, k.lower()) for k in key.split("-"))))
        for entry, tone in variants:
            if entry.get(f"has_img_{vendor}"):
                stem = entry["unified"].lower()
                records.append({**base, "unified": stem, "skin_tone": tone, "image": entry["image"],
                                "file": f"{stem}_{vendor}.png"})
    return records


def default_name(vendors: tuple[str, ...], categories: tuple[str, ...], resolution: int) -> str:
    """Folder name of a dataset: ``faces32`` for the defaults, the settings spelled out otherwise."""
    if tuple(categories) == FACE_CATEGORIES:
        name = f"faces{resolution}"
    else:
        name = f"emoji{resolution}-" + hashlib.sha256("|".join(categories).encode()).hexdigest()[:8]
    return name if tuple(vendors) == DEFAULT_VENDORS else f"{name}-{'-'.join(vendors)}"


def prepare(cache: Path | None = None, vendors: tuple[str, ...] = DEFAULT_VENDORS,
            categories: tuple[str, ...] = FACE_CATEGORIES, resolution: int = 32, name: str | None = None,
            packages: dict[str, EmojiPackage] = PACKAGES, log: Callable[[str], None] = print) -> Path:
    """Fetch the packages and write the dataset (see the module docstring); returns its folder.

    A folder that already holds a complete dataset of the same settings is reused as it is; a folder holding
    anything else is refused, never overwritten. The dataset is written into a temporary folder next to it and
    moved into place when complete, so an interrupted run leaves nothing half-written behind.

    Raises:
        EmojiDataError: unknown vendor or category, no network, a bad checksum, or an unusable output folder.
    """
    unknown = [v for v in vendors if v not in packages]
    if unknown or not vendors:
        raise EmojiDataError(f"unknown vendor(s) {unknown or list(vendors)}; choose from {', '.join(packages)}")
    if not 4 <= resolution <= 64:
        raise EmojiDataError(f"resolution must lie in [4, 64] (the art is 64 px), got {resolution}")
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / "emoji" / (name or default_name(vendors, categories, resolution))
    settings = {"vendors": list(vendors), "categories": list(categories), "resolution": resolution,
                "packages": {v: packages[v].spec for v in vendors},
                "sha256": {v: packages[v].sha256 for v in vendors}, "split_bounds": list(SPLIT_BOUNDS)}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings and all((out / r["split"] / r["file"]).is_file()
                                                       for r in manifest["images"]):
            log(f"reusing {out} ({len(manifest['images'])} images)")
            return out
        raise EmojiDataError(f"{out} holds a dataset with other settings or missing files; remove it or pass --name")
    if out.exists():
        raise EmojiDataError(f"{out} exists and is not a finished dataset; remove it or pass --name")

    records = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp_root:
        tmp = Path(tmp_root) / "dataset"
        for split in SPLITS:
            (tmp / split).mkdir(parents=True)
            (tmp / split / "dataset.json").write_text(json.dumps({"labels": None}) + "\n")
        for vendor in vendors:
            package = packages[vendor]
            tarball = fetch_package(package, cache / "emoji" / "packages")
            log(f"{package.spec}: sha256 ok")
            try:
                with tarfile.open(tarball, "r:gz") as tar:
                    catalogue = json.load(tar.extractfile("package/emoji.json"))
                    present = {e.get("category") for e in catalogue}
                    missing = [c for c in categories if c not in present]
                    if missing:
                        raise EmojiDataError(f"no category {missing} in {package.spec}; it has: "
                                             f"{', '.join(sorted(map(str, present)))}")
                    for record in emoji_records(catalogue, vendor, tuple(categories)):
                        member = tar.extractfile(f"package/img/{vendor}/64/{record['image']}")
                        to_rgb(member.read(), resolution).save(tmp / record["split"] / record["file"])
                        records.append(record)
            except (tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
                raise EmojiDataError(f"{tarball}: not the expected package layout ({exc})") from None
        (tmp / "manifest.json").write_text(json.dumps(
            {"format": MANIFEST_FORMAT, "settings": settings,
             "licences": {v: packages[v].licence for v in vendors}, "images": records}, indent=1) + "\n")
        os.replace(tmp, out)
    counts = {s: sum(r["split"] == s for r in records) for s in SPLITS}
    log(f"wrote {len(records)} images to {out}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return out


def export_splits(dataset: Path, folder: Path, splits: tuple[str, ...] = ("val", "held_out")) -> None:
    """Copy the PNGs of ``splits`` to ``folder/<split>/`` (folders that must not exist yet) with a licence note
    and the split's part of the manifest."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    for split in splits:
        target = folder / split
        if target.exists():
            raise EmojiDataError(f"{target} exists; remove it first (exports never overwrite)")
    for split in splits:
        target = folder / split
        target.mkdir(parents=True)
        chosen = [r for r in manifest["images"] if r["split"] == split]
        for record in chosen:
            shutil.copyfile(dataset / split / record["file"], target / record["file"])
        (target / "ATTRIBUTION.md").write_text(attribution(manifest, split, len(chosen)))
        (target / "manifest.json").write_text(json.dumps(
            {"format": MANIFEST_FORMAT, "settings": manifest["settings"], "licences": manifest["licences"],
             "images": chosen}, indent=1) + "\n")


def attribution(manifest: dict, split: str, count: int) -> str:
    s = manifest["settings"]
    lines = [f"# Emoji art, {split} split ({count} images, {s['resolution']} px)", "",
             "Prepared by `python -m data.emoji` (composited on white, Lanczos-resized) from:", ""]
    for vendor, spec in s["packages"].items():
        lines.append(f"- `{spec}` (npm, sha256 `{s['sha256'][vendor]}`): {manifest['licences'][vendor]}")
    lines += ["", "File names are `<code points>_<vendor>.png`. The emoji-datasource packages themselves are MIT",
              "(Copyright (c) 2013 Cal Henderson); the artwork keeps its vendor's licence above. The images are",
              "resized and composited on white; no other change was made.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data.emoji", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default $SGILO_CACHE or ~/.cache/sgilo)")
    parser.add_argument("--vendors", default=",".join(DEFAULT_VENDORS), help=f"comma list of {', '.join(PACKAGES)}")
    parser.add_argument("--categories", default=",".join(FACE_CATEGORIES), help="comma list of emoji.json categories")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--name", default=None, help="dataset folder name under <cache>/emoji/")
    parser.add_argument("--export", type=Path, default=None,
                        help="also copy the val and held-out PNGs to DIR/{val,held_out} (folders that must not exist)")
    args = parser.parse_args(argv)
    try:
        out = prepare(args.cache, tuple(v for v in args.vendors.split(",") if v),
                      tuple(c.strip() for c in args.categories.split(",") if c.strip()), args.resolution, args.name)
        if args.export is not None:
            export_splits(out, args.export)
            print(f"exported the val and held-out splits to {args.export}")
    except (EmojiDataError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    print(out)


if __name__ == "__main__":
    main()
