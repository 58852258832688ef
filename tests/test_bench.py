"""The benchmark's machinery on a tiny configuration: structure of the figures, never their speed."""

from __future__ import annotations

import json
import os
import sys

import pytest

from vivify import bench
from vivify.errors import VivifyError
from vivify.eval import figures


def _positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


def test_run_tiny_configuration(tmp_path, capsys):
    out = tmp_path / "figures" / "bench.json"
    # 256² is the smallest output at which the astronaut's face is over the engine's 48 px minimum.
    assert bench.run(frames=6, json_path=out, sizes=[(256, 256)], cores=[1], warmup=2, driving="synthetic") == 0

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "standard"
    assert report["frames"] == 6 and report["warmup"] == 2
    machine = report["machine"]
    assert machine["cores_available"] == len(os.sched_getaffinity(0))
    for key in ("cpu", "python", "numpy", "opencv", "mediapipe"):
        assert isinstance(machine[key], str) and machine[key]
    assert report["driving"]["kind"] == "synthetic" and report["driving"]["frames"] == 6

    (render,) = report["render"]
    assert render["size"] == [256, 256] and render["cores"] == 1 and render["frames"] == 6
    assert len(render["cpus"]) == 1
    for key in ("median_ms", "p95_ms", "mean_ms", "fps"):
        assert _positive(render[key]), key
    assert render["p95_ms"] >= render["median_ms"]
    assert render["frames_with_face"] == 6

    (e2e,) = report["end_to_end"]
    assert e2e["size"] == [256, 256] and e2e["cores"] == 1 and e2e["frames"] == 6 and e2e["exit_code"] == 0
    for key in ("wall_s", "cpu_s", "fps", "max_rss_kib", "output_bytes"):
        assert _positive(e2e[key]), key
    assert e2e["fps"] == pytest.approx(6 / e2e["wall_s"])
    (startup,) = report["startup"]
    assert _positive(startup["wall_s"]) and _positive(startup["max_rss_kib"])
    assert report["long"] is None
    assert _positive(report["duration_s"])

    table = capsys.readouterr().out
    assert "Render only" in table and "End to end" in table and "256x256" in table
    assert "load average" in table and "machine:" in table


def test_measure_process_reports_peak_memory(tmp_path):
    # A child that holds ~200 MiB: wait4's max RSS sees it, in KiB.
    code = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    result = bench.measure_process([sys.executable, "-c", code], [bench.available_cpus()[0]], tmp_path / "log")
    assert result["exit_code"] == 0
    assert result["max_rss_mib"] > 200
    assert _positive(result["wall_s"])


def test_measure_process_pins_and_sets_threads(tmp_path):
    cpu = bench.available_cpus()[-1]
    out = tmp_path / "child.json"
    code = ("import json, os, sys; json.dump({'cpus': sorted(os.sched_getaffinity(0)), "
            "'omp': os.environ['OMP_NUM_THREADS']}, "
            "open(sys.argv[1], 'w'))")
    bench.measure_process([sys.executable, "-c", code, str(out)], [cpu], tmp_path / "log")
    assert json.loads(out.read_text()) == {"cpus": [cpu], "omp": "1"}


def test_failing_child_raises_with_its_output(tmp_path):
    with pytest.raises(VivifyError, match="boom"):
        bench.measure_process([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                              [bench.available_cpus()[0]], tmp_path / "log")


def test_bad_arguments():
    with pytest.raises(VivifyError):
        bench.run(frames=1)
    with pytest.raises(VivifyError):
        bench.run(frames=10, cores=[len(os.sched_getaffinity(0)) + 1])


def test_long_report_format():
    def run_figures(seconds: int, peak_mib: float) -> dict:
        return {"seconds": seconds, "frames": seconds * 30, "wall_s": seconds * 2.0, "fps": 15.0, "cores": 2,
                "max_rss_kib": peak_mib * 1024, "max_rss_mib": peak_mib, "other_load_cores": None}

    report = {
        "started": "2025-01-01 00:00 UTC", "command": "vivify bench --long", "duration_s": 200.0,
        "machine": bench.machine_info({"numpy": "1", "opencv": "4", "mediapipe": "0.10", "av": "18"}),
        "load_average_1min": {"start": 0.1, "end": None}, "speed_probe_ms": {"start": 61.0, "end": 64.4},
        "repeats": 1,
        "driving": {"description": "synthetic"}, "render": [], "end_to_end": [], "startup": [],
        "long": {"runs": [run_figures(15, 500.0), run_figures(60, 510.0)], "growth_mib": 10.0, "peak_mib": 510.0,
                 "target_met": True},
    }
    text = bench.format_report(report)
    assert "60s   1800" in text and "+10 MiB" in text and "target met" in text
    assert "took 61 ms at start, 64 ms at end" in text
    assert "Render only" not in text and "End to end" not in text


def test_one_kind_of_benchmark_at_a_time(capsys):
    from vivify.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--speak", "--ray"])
    assert exit_info.value.code == 2
    assert "argument --ray: not allowed with argument --speak" in capsys.readouterr().err
    assert main(["bench", "--audio", "speech.wav"]) == 2
    assert capsys.readouterr().err == ("vivify: error: --audio goes with --speak: it is the speech that "
                                       "`vivify speak` says\n")
    for command, option in ((["--ray", "--frames", "10"], "--frames"), (["--long", "--repeats", "2"], "--repeats"),
                            (["--speak", "--frames", "10"], "--frames")):
        assert main(["bench", *command]) == 2
        assert capsys.readouterr().err == (f"vivify: error: {option} does not go with {command[0]}: that "
                                           "benchmark's length and runs are fixed\n")


def test_the_grid_benchmark_on_a_tiny_clip(tmp_path, capsys):
    """`vivify bench --sing` times a whole `vivify sing` of 8 portraits (its worker processes' CPU included)."""
    from vivify.bench_sing import run_sing

    out = tmp_path / "sing.json"
    assert run_sing(frames=6, repeats=2, json_path=out, driving="synthetic") == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["driving"]["frames"] == 6 and report["cell"] == [256, 256] and report["grid"] == [2, 4]
    assert len(report["portraits"]) == 8 and len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["exit_code"] == 0 and run["fps"] == pytest.approx(6 / run["wall_s"])
        assert _positive(run["cpu_s"]) and _positive(run["max_rss_mib"])
    assert report["fps"] == pytest.approx(6 / report["median_wall_s"])
    assert report["target_met"] == (report["fps"] >= 10)
    assert all(_positive(report["speed_probe_ms"][when]) for when in ("start", "end"))
    table = capsys.readouterr().out
    assert "8 portraits in a 2x4 grid of 256x256 cells" in table and "machine:" in table and "frames/s" in table


def test_the_cpu_is_named_with_its_family_and_model(tmp_path):
    # Two processors, as a two-core machine lists them: the first one's fields name the CPU.
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(block.format(n=0) + "\n" + block.format(n=1).replace("26", "25"), encoding="utf-8")
    assert figures.cpu_model(str(cpuinfo)) == "AMD EPYC (family 26, model 2)"

    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n", encoding="utf-8")
    assert figures.cpu_model(str(cpuinfo)) == "Some CPU"
