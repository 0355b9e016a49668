"""inverse.report in-process: the multirun page orders jobs as Hydra numbers them, curves skip missing points, and
a page names only images that exist."""

import json
import re

from inverse.report import svg_curve, write_run_report, write_sweep_report


def test_sweep_page_orders_jobs_by_number_and_skips_jobs_without_results(tmp_path):
    for name in ["10_dps", "2_ilo", "3_running"]:
        (tmp_path / name).mkdir()
    for name in ["10_dps", "2_ilo"]:
        metrics = {"images": [{"name": "a", "psnr": 20.0}, {"name": "b", "psnr": 22.0}], "mean": {"psnr": 21.0}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    text = write_sweep_report(tmp_path).read_text()
    assert text.index("2_ilo") < text.index("10_dps") and "3_running" not in text
    assert "21 ± 1.41" in text  # mean ± sample std over the job's images
    assert write_sweep_report(tmp_path / "2_ilo") is None  # no job folders: no page


def test_curves_skip_missing_points_and_log_scale_positive_losses():
    svg = svg_curve([{"loss": [1.0, None, 0.1]}, {"loss": [0.05, 0.01]}], "loss")
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "log10" in svg and "stroke-dasharray" in svg
    assert svg_curve([{"psnr": None}], "psnr") == ""


def test_run_page_names_only_existing_tiles(tmp_path):
    (tmp_path / "images" / "x" / "view").mkdir(parents=True)
    (tmp_path / "images" / "x" / "view" / "final.png").write_bytes(b"png")
    (tmp_path / "images" / "x" / "reference.png").write_bytes(b"png")
    records = [{"name": "x", "psnr": 30.0, "rounds": [{"layer": 0, "psnr": 30.0}], "_curves": []}]
    text = write_run_report(tmp_path, records, ["reference", "final", "std"], "t", "a: 1", total=3).read_text()
    assert re.findall(r'src="([^"]+)"', text) == ["images/x/reference.png", "images/x/view/final.png"]
    assert "1 of 3 image(s) solved" in text and "<pre>a: 1</pre>" in text
