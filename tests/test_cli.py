from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spatialdata as sd

import stfuse as sf
from stfuse.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


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
@pytest.mark.parametrize("as_option", [False, True])
def test_read_st_to_zarr(her2st_dir, tmp_path, capsys, as_option):
    d = her2st_dir
    out = tmp_path / "c2.zarr"
    rc = main(["read-st", *(["--out"] if as_option else []), str(out), "--counts", str(d / "ST-cnts/C2.tsv.gz"),
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


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line.split("#", 1)[0])[1:] for line in section.splitlines() if line.startswith("stfuse ")]


def test_readme_commands_parse():
    """Every command of README's "Command line" section is accepted as written."""
    commands = _readme_commands()
    assert len(commands) >= 4 and any(c[0] == "read-st" for c in commands)
    for argv in commands:
        _, extra = build_parser().parse_known_args(argv)
        assert extra == [], argv


def test_read_st_out_option_parses():
    args = build_parser().parse_args(["read-st", "--counts", "c.tsv", "--spots", "s.tsv", "--out", "c2.zarr"])
    assert args.out_opt == "c2.zarr" and args.out is None


def test_options_converted_from_type_hints():
    opts = vars(build_parser().parse_args(
        ["run", "histospace", "x.zarr", "--genes", "GNAS,ERBB2", "--patience", "none", "--no-tta", "--lr", "1e-3",
         "--stain", "macenko", "--epochs", "3"]))
    assert opts["tool:genes"] == ["GNAS", "ERBB2"] and opts["tool:patience"] is None and opts["tool:tta"] is False
    assert opts["tool:lr"] == 1e-3 and opts["tool:stain"] == "macenko" and opts["tool:epochs"] == 3
    assert "tool:batch_size" not in opts  # not given: the tool's own default applies
    opts = vars(build_parser().parse_args(["run", "spacrd", "x.zarr", "--positive", "invasive cancer,cancer in situ"]))
    assert opts["tool:positive"] == ["invasive cancer", "cancer in situ"]


@pytest.mark.parametrize("argv", [["--n-neighs", "abc"], ["--resolution", "high"], ["--modality", "nope"],
                                  ["--n-clusters", "2.5"]])
def test_bad_option_value_is_one_line_rc2(toy_zarr, capsys, argv):
    assert main(["run", "stmic", str(toy_zarr), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stfuse run stmic: error: argument " + argv[0]) and len(err.strip().splitlines()) == 1
    assert repr(argv[1]) in err


def test_option_a_tool_does_not_take_is_refused(toy_zarr, tmp_path, capsys):
    assert main(["run", "senca", str(toy_zarr), "--reference", str(toy_zarr)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "senca does not take --reference" in err and "--n-clusters" in err and "--save-model" in err
    assert main(["run", "stmic", str(toy_zarr), "--save-model", str(tmp_path / "m")]) == 2
    assert "stmic does not take --save-model" in capsys.readouterr().err


def test_senca_save_model_then_model(toy_zarr, tmp_path, capsys):
    assert main(["run", "senca", str(toy_zarr), "--no-image", "--steps", "1", "--n-clusters", "3",
                 "--n-top-genes", "40", "--save-model", str(tmp_path / "m")]) == 0
    assert "model saved to" in capsys.readouterr().out
    model = sf.models.SENCA.load(tmp_path / "m")
    assert len(model.genes) == 40
    trained = sd.read_zarr(toy_zarr).tables["table"]
    assert trained.obs["senca"].nunique() == 3
    # apply the saved model: to the training section (its embedding again) and to a new one (no training)
    assert main(["run", "senca", str(toy_zarr), "--model", str(tmp_path / "m"), "--n-clusters", "3",
                 "--key-added", "again"]) == 0
    assert "new obs columns: ['again']" in capsys.readouterr().out
    t = sd.read_zarr(toy_zarr).tables["table"]
    assert np.array_equal(t.obsm["X_again"], t.obsm["X_senca"]) and t.uns["again"]["params"]["trained_here"] is False
    new = tmp_path / "new.zarr"
    sf.datasets.toy(n_spots=200, seed=1).write(new)
    assert main(["run", "senca", str(new), "--model", str(tmp_path / "m"), "--n-clusters", "3"]) == 0
    t = sd.read_zarr(new).tables["table"]
    assert t.obs["senca"].nunique() == 3 and t.obsm["X_senca"].shape == (200, model.params["latent"])
    assert main(["run", "senca", str(new), "--model", str(tmp_path / "m"), "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "only apply to training" in err


@pytest.mark.parametrize("after_staging_write", [False, True])
def test_interrupted_in_place_update_keeps_the_table(toy_zarr, monkeypatch, after_staging_write):
    """An interruption while the updated table is written leaves the user's table readable on disk."""
    write_element, write = sd.SpatialData.write_element, sd.SpatialData.write

    def interrupted(original):
        def run(self, *args, **kwargs):
            if after_staging_write:
                original(self, *args, **kwargs)
            raise KeyboardInterrupt

        return run

    monkeypatch.setattr(sd.SpatialData, "write_element", interrupted(write_element))
    monkeypatch.setattr(sd.SpatialData, "write", interrupted(write))
    with pytest.raises(KeyboardInterrupt):
        main(["run", "stmic", str(toy_zarr), "--n-clusters", "3", "--modality", "expression"])
    monkeypatch.undo()
    back = sd.read_zarr(toy_zarr)
    assert list(back.tables) == ["table"]
    assert back.tables["table"].n_obs == 200 and "stmic" not in back.tables["table"].obs
    # and the next run updates it normally
    assert main(["run", "stmic", str(toy_zarr), "--n-clusters", "3", "--modality", "expression"]) == 0
    back = sd.read_zarr(toy_zarr)
    assert list(back.tables) == ["table"] and back.tables["table"].obs["stmic"].nunique() == 3
    assert sorted(p.name for p in toy_zarr.parent.iterdir()) == ["toy.zarr"]  # no staging store left


def test_killed_between_the_renames_is_recovered(toy_zarr):
    """A kill between the two renames of the swap is undone by the next run."""
    os.replace(toy_zarr / "tables" / "table", toy_zarr / "tables" / "table_stfuse_old")
    assert main(["run", "stmic", str(toy_zarr), "--n-clusters", "3", "--modality", "expression"]) == 0
    back = sd.read_zarr(toy_zarr)
    assert list(back.tables) == ["table"] and back.tables["table"].obs["stmic"].nunique() == 3
    assert sorted(p.name for p in (toy_zarr / "tables").iterdir()) == ["table", "zarr.json"]


def test_parser_imports_no_heavy_module():
    """`stfuse --help` builds its parser without torch, scanpy, spatialdata or the tools."""
    code = ("import sys; from stfuse.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'scanpy', 'spatialdata', 'anndata', 'numpy', 'stfuse.tl') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sf.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_help_text_from_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["run", "stmic", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Number of clusters" in out or "number of clusters" in out.lower()
    assert "(default: 39)" in out  # n_neighs
