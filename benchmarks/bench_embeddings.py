"""Do image embeddings separate the HER2ST author clusters? sf.im encoders vs mean RGB of the patch.

For every HER2ST section with an image (B4, C2–C6; C2 is the acceptance section, 185 labelled spots):
features of each spot's 1-diameter patch, then the silhouette score of the authors' expression
clusters (``obs["cluster"]``) on standardised features, and 5-fold stratified CV accuracy of a k=5
nearest-neighbour classifier (standardised features). Baselines: mean RGB of the patch, and the
same histospace architecture with random (untrained) weights.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.im._encoders import Encoder, _PooledConvEncoder
from stfuse.nn import ConvAutoencoder, seeded

from ._util import append_results, table

SECTIONS = ("C2", "B4", "C3", "C4", "C5", "C6")


def scores(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Silhouette (standardised features) and 5-fold kNN (k=5) accuracy."""
    Z = StandardScaler().fit_transform(X)
    sil = float(silhouette_score(Z, y))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    acc = float(cross_val_score(make_pipeline(StandardScaler(), KNeighborsClassifier(5)), X, y, cv=cv).mean())
    return sil, acc


def mean_rgb(spots) -> np.ndarray:
    X = np.empty((spots.n_obs, 3), np.float32)
    side = sf.im.patch_side_px(spots)
    for b in sf.im.iter_patches(spots, side, out_px=128, batch_size=64):
        X[b.index] = b.patches.reshape(len(b.index), 3, -1).mean(axis=2) / 255.0
    return X


def random_histospace() -> Encoder:
    with seeded(0):
        ae = ConvAutoencoder().eval()
    return Encoder(name="histospace_random", module=_PooledConvEncoder(ae.encoder), input_px=128, output_dim=256,
                   checksum="random0")


def main(*sections: str) -> None:
    sf.settings.verbosity = 0
    torch.manual_seed(0)
    rows = []
    for section in sections or SECTIONS:
        sdata = sf.datasets.her2st(section)
        spots = get_spots(sdata)
        lab = spots.table.obs["cluster"]
        keep = lab.notna().to_numpy()
        y = lab[keep].astype(str).to_numpy()
        feats = {"mean RGB of the patch (3-d)": mean_rgb(spots)}
        for name, enc, stain in [
            ("histospace (default, 256-d)", "histospace", None),
            ("histospace + macenko", "histospace", "macenko"),
            ("histospace + reinhard", "histospace", "reinhard"),
            ("histospace, random weights", random_histospace(), None),
        ]:
            feats[name] = sf.im.image_features(spots, enc, stain=stain, client=False).X
        for name, X in feats.items():
            sil, acc = scores(X[keep], y)
            rows.append({"section": section, "spots": int(keep.sum()), "clusters": len(set(y)), "features": name,
                         "silhouette": sil, "kNN accuracy": acc})
            print(rows[-1], flush=True)
        del sdata, spots
    majority = "; ".join(
        f"{s}: {max(np.unique(sf.datasets.her2st(s, image=False).tables['table'].obs['cluster'].dropna().astype(str), return_counts=True)[1]) / r['spots']:.3f}"
        for s, r in {r["section"]: r for r in rows}.items()
    )
    body = (
        "Author expression clusters (`obs['cluster']`, spots with a cluster) vs image features of each spot's "
        "1-diameter patch. Silhouette on standardised features (Euclidean); kNN = 5-fold stratified CV "
        f"accuracy of KNeighborsClassifier(k=5) on standardised features. Majority-class accuracy: {majority}.\n\n"
        + table(rows)
    )
    append_results("Image embeddings vs HER2ST author clusters (silhouette, kNN accuracy)", body,
                   "python -m benchmarks.run embeddings")


if __name__ == "__main__":
    main(*sys.argv[1:])
