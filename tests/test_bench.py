"""`fercore bench` produces every figure it promises (tiny sizes: speed itself is never asserted)."""
import json

from fercore.bench import run, table
from fercore.cli import main


def test_bench_reports_both_pipelines_methods_and_variants():
    r = run(size=32, backbone="resnet10t", batch=16, n_images=64, steps=1, warmup=1, workers=0,
            methods=["ce", "scn"], variants=["fp32", "channels_last"])
    assert r["peer"]["images_per_s"] > 0 and r["fercore"]["images_per_s"] > 0 and r["ratio"] > 0
    assert set(r["methods"]) == {"ce", "scn"} and r["methods"]["ce"]["vs_ce"] == 1.0
    assert set(r["variants"]) == {"fp32", "channels_last"} and r["variants"]["fp32"]["tflops"] > 0
    text = table(r)
    assert "ratio fercore / peers" in text and "| scn |" in text and "matmul peak" in text
    json.dumps(r)


def test_bench_bad_arguments_are_one_line(capsys):
    assert main(["bench", "--methods", "dmue"]) == 2
    assert "dmue" in capsys.readouterr().err
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
