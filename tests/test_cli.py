from __future__ import annotations

import pytest
import spatialdata as sd

import stfuse as sf
from stfuse.cli import main


@pytest.fixture
def toy_zarr(tmp_path):
    path = tmp_path / "toy.zarr"
    sf.datasets.toy(n_spots=200).write(path)
    return path


def test_run_stmic_in_place_and_out(toy_zarr, tmp_path, capsys):
    assert main(["run", "stmic", str(toy_zarr), "--n-clusters", "4", "--n-neighs", "15"]) == 0
    assert "new obs columns: ['stmic']" in capsys.readouterr().out
    assert sd.read_zarr(toy_zarr).tables["table"].obs["stmic"].nunique() == 4
    out = tmp_path / "out.zarr"
    assert main(["run", "stmic", str(toy_zarr), "--out", str(out), "--key-added", "again",
                 "--modality", "expression", "--resolution", "0.5"]) == 0
    assert "again" in sd.read_zarr(out).tables["table"].obs


def test_bad_input_exit_code(tmp_path, capsys):
    assert main(["run", "stmic", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stfuse run: error:") and len(err.strip().splitlines()) == 1


def test_tool_error_is_one_line(toy_zarr, capsys):
    assert main(["run", "stmic", str(toy_zarr), "--table-key", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "stmic", "--help"], ["read-st", "--help"],
                                  ["demo", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: stfuse" in capsys.readouterr().out


@pytest.mark.her2st
def test_read_st_to_zarr(her2st_dir, tmp_path, capsys):
    d = her2st_dir
    out = tmp_path / "c2.zarr"
    rc = main(["read-st", str(out), "--counts", str(d / "ST-cnts/C2.tsv.gz"),
               "--spots", str(d / "ST-spotfiles/C2_selection.tsv"),
               "--clusters", str(d / "ST-cluster/lbl/C2-cluster-annotation.tsv.gz")])
    assert rc == 0 and "187 spots" in capsys.readouterr().out
    assert sd.read_zarr(out).tables["table"].obs["cluster"].notna().sum() == 185


@pytest.mark.slow
def test_demo_quick_on_toy(tmp_path):
    """`stfuse demo` runs the four tools, writes a zarr, a figure and metrics, and prints them."""
    import json

    from stfuse.cli import main

    assert main(["demo", "--quick", "--data", "toy", "--out", str(tmp_path / "demo")]) == 0
    out = tmp_path / "demo"
    assert (out / "demo.png").stat().st_size > 10_000 and (out / "demo.zarr").is_dir()
    m = json.loads((out / "metrics.json").read_text())
    assert -1.0 <= m["stmic ARI"] <= 1.0 and -1.0 <= m["senca ARI"] <= 1.0 and 0.0 <= m["spacrd auc"] <= 1.0
    assert set(m["seconds"]) == {"stmic", "senca", "spacrd", "histospace"}
    import spatialdata

    table = spatialdata.read_zarr(out / "demo.zarr").tables["table"]
    assert {"stmic", "senca", "spacrd", "spacrd_score"} <= set(table.obs) and "X_histospace_pred" in table.obsm
