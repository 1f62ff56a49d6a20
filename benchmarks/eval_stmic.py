"""Evaluate sf.tl.stmic: fused vs expression-only vs image-only ARI, on the toy section and HER2ST.

``python -m benchmarks.eval_stmic [--sections B4 C2 ...] [--encoder histospace] [--toy-spots 900] [--refusals]
[--no-append]``

- toy (``sf.datasets.toy``): truth ``obs["region"]``, ``n_clusters=4``;
- HER2ST B4, C2–C6 (the sections with an image): truth = the authors' expression clusters
  ``obs["cluster"]`` (spots without a cluster are left out of the ARI), ``n_clusters`` = their number;
- ``--refusals``: the seven pathologist-labelled sections (no image here) must be refused.

Image features are cached in ``benchmarks/results/embeddings`` (by section, encoder and weights
checksum) so re-runs only cluster. Results are appended to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import stfuse as sf
from stfuse import _keys as K

from ._util import ROOT, append_results, measure, table

CACHE = ROOT / "benchmarks" / "results" / "embeddings"
MODALITIES = ("both", "expression", "image")
SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")
PATHOLOGIST = ("B1", "C1", "D1", "E1", "F1", "G2", "H1")  # no image in the development data


def refusals() -> list[dict]:
    """sf.tl.stmic on the seven pathologist-labelled sections (no image): each must raise InputError."""
    rows = []
    for s in PATHOLOGIST:
        sdata = sf.datasets.her2st(s)
        try:
            sf.tl.stmic(sdata, n_clusters=6)
            outcome = "RAN (wrong: must refuse)"
        except sf.InputError as e:
            outcome = "refused: " + str(e).split(". ")[0]
        rows.append({"section": s, "outcome": outcome, "table unchanged": "stmic" not in sdata.tables["table"].obs})
        print(rows[-1], flush=True)
    return rows


def _cache_paths(name: str, encoder: str) -> tuple[Path, Path]:
    return CACHE / f"{name}_{encoder}.npy", CACHE / f"{name}_{encoder}.json"


def _load_embedding(sdata, name: str, encoder: str) -> None:
    """Put a cached embedding into the table; stmic reuses it only if its provenance still matches."""
    X_path, meta_path = _cache_paths(name, encoder)
    if not (X_path.exists() and meta_path.exists()):
        return
    meta = json.loads(meta_path.read_text())
    t = sdata.tables["table"]
    X = np.load(X_path)
    if X.shape[0] != t.n_obs:
        return
    t.obsm[meta["obsm_key"]] = X
    t.uns[K.EMBEDDINGS] = {meta["obsm_key"]: meta["provenance"]}


def _save_embedding(sdata, name: str, encoder: str, key: str) -> None:
    t = sdata.tables["table"]
    obsm_key = t.uns[key].get("image_obsm")
    if not obsm_key:
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    X_path, meta_path = _cache_paths(name, encoder)
    np.save(X_path, np.asarray(t.obsm[obsm_key]))
    prov = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(t.uns[K.EMBEDDINGS][obsm_key]).items()}
    meta_path.write_text(json.dumps({"obsm_key": obsm_key, "provenance": prov}))


def evaluate(sdata, name: str, truth_key: str, n_clusters: int, *, encoder: str, flavor: str,
             weights: str | None = None) -> list[dict]:
    """ARI of the three modalities on one section (same run, same settings)."""
    t = sdata.tables["table"]
    _load_embedding(sdata, name, encoder)
    rows = []
    for mod in MODALITIES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seconds, peak, _ = measure(lambda mod=mod: sf.tl.stmic(sdata, n_clusters=n_clusters, modality=mod,
                                                                   encoder=encoder, weights=weights, flavor=flavor,
                                                                   key_added=mod))
        info = t.uns[mod]
        if mod == "both":
            _save_embedding(sdata, name, encoder, mod)
        rows.append({
            "section": name, "modality": mod, "ARI": sf.metrics.ari(t.obs[truth_key], t.obs[mod]),
            "clusters": f"{info['n_clusters']}/{n_clusters}", "resolution": float(info["resolution"]),
            "seconds": seconds, "peak MiB": peak,
            "note": "; ".join(str(w.message)[:60] for w in caught if issubclass(w.category, UserWarning)
                              and "no resolution" in str(w.message)),
        })
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS))
    p.add_argument("--encoder", default="histospace")
    p.add_argument("--weights", default=None, help="local weights file of the encoder")
    p.add_argument("--flavor", default="louvain", choices=["louvain", "leiden"])
    p.add_argument("--toy-spots", type=int, default=900)
    p.add_argument("--refusals", action="store_true", help="also check the 7 sections without image are refused")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    sf.settings.verbosity = 0
    t0 = time.perf_counter()
    rows: list[dict] = []
    if args.toy_spots:
        toy = sf.datasets.toy(n_spots=args.toy_spots, seed=0)
        rows += evaluate(toy, f"toy{args.toy_spots}", K.REGION_TRUTH, 4, encoder=args.encoder, flavor=args.flavor,
                         weights=args.weights)
    her2st_rows = []
    for s in args.sections:
        sdata = sf.datasets.her2st(s)
        truth = sdata.tables["table"].obs[K.CLUSTER]
        her2st_rows += evaluate(sdata, s, K.CLUSTER, int(truth.dropna().nunique()), encoder=args.encoder,
                                flavor=args.flavor, weights=args.weights)
    rows += her2st_rows
    summary = []
    if her2st_rows:
        for mod in MODALITIES:
            aris = [r["ARI"] for r in her2st_rows if r["modality"] == mod]
            summary.append({"modality": mod, "mean ARI": float(np.mean(aris)), "median ARI": float(np.median(aris)),
                            "sections": len(aris)})
    refused = refusals() if args.refusals else []
    body = (
        f"Encoder `{args.encoder}`, flavor `{args.flavor}`, n_pcs=10, n_neighs=39, random_state=0; truth: toy "
        "`obs['region']` (n_clusters=4), HER2ST `obs['cluster']` (author expression clusters; spots without one "
        "left out; n_clusters = their number). Seconds/peak MiB per `sf.tl.stmic` call (image features are "
        f"computed by the first call of a section unless cached). Total {time.perf_counter() - t0:.0f} s.\n\n"
        + table(rows) + ("\n\nHER2ST B4, C2–C6:\n\n" + table(summary) if summary else "")
        + ("\n\nSections without an image (pathologist-labelled):\n\n" + table(refused) if refused else "")
    )
    command = "python -m benchmarks.eval_stmic " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.no_append:
        print(body)
    else:
        append_results(f"stMIC ({args.flavor}): fused vs expression-only vs image-only (ARI)", body, command.strip())


if __name__ == "__main__":
    main()
