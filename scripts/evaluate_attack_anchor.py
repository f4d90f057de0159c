"""The attack R against what `fiva anonymize` writes (anchor-face default), and the defenses against it (issue 17).

    python scripts/evaluate_attack_anchor.py --attack runs/attack_anchor/attack.safetensors \
        [--lfw ../shared/data/lfw] [--probes 100] [--eps 0.005,0.01,0.02,0.05,0.15] [--out runs/attack_anchor_eval]

Probes: one photo each of LFW evaluation identities (fold 1; R's pairs come from the training
identities), anonymized by the default pipeline (verification and retries as shipped); faces it did
not draw (fallback) are left out and counted. Gallery: every image of the evaluation identities (the
probe's own photo excluded where the person has others), dlib at its calibrated threshold (0.5568,
FAR 0.001 on the LFW pairs; MODEL_CARD.md). Per defense (none, the default noise, FGSM against R at
each --eps): ID (the output retrieved as the original), RA (R's reconstruction retrieved as the
original, paper Table 1/3), the dlib distance of the reconstruction to the original, and the image
cost: PSNR / SSIM of the face box against the undefended output. Writes OUT/report.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fiva.anonymize.frame import Anonymizer
from fiva.anonymize.runner import file_seed
from fiva.evaluate.defenses import psnr, ssim
from fiva.evaluate.lfw import evaluation_identities, identity_images, image_path
from fiva.evaluate.metrics import Gallery, retrieved
from fiva.evaluate.models import embed_images, load_models
from fiva.evaluate.run import reconstruct
from fiva.faces import FaceDetector
from fiva.faces.detect import match_face
from fiva.io import read_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True)
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--eps", default="0.005,0.01,0.02,0.05,0.15", help="FGSM step sizes (grey levels / 255)")
    ap.add_argument("--threshold", type=float, default=0.5568, help="dlib threshold at FAR 0.001 (calibrated on the LFW pairs)")
    ap.add_argument("--out", default="runs/attack_anchor_eval")
    ap.add_argument("--identities", type=int, default=None, help="a quick run: only this many evaluation identities in the gallery")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lfw, out = Path(a.lfw), Path(a.out)
    from fiva.models.attack import load_attack

    R = load_attack(a.attack)
    models = load_models(("dlib",))
    dlib = models["dlib"]
    det = FaceDetector()
    ids = evaluation_identities(lfw)
    order = [ids[i] for i in np.random.default_rng(a.seed).permutation(len(ids))]
    if a.identities:
        order = order[: a.identities]
        ids = sorted(order)
    keys = [k for name in ids for k in identity_images(lfw, name)]
    faces = embed_images([image_path(lfw, k) for k in keys], models, workers=1, progress=True, desc="gallery")
    gkeys = [k for k in keys if faces[image_path(lfw, k)] is not None]
    gallery = Gallery({"dlib": np.stack([faces[image_path(lfw, k)].emb["dlib"] for k in gkeys])}, np.array([k[0] for k in gkeys]))
    gindex = {k: i for i, k in enumerate(gkeys)}
    probes = [identity_images(lfw, n)[0] for n in order if identity_images(lfw, n)[0] in gindex][: a.probes]

    defenses = [("none", {"defense": "none"}), ("noise (default)", {"defense": "noise"})]
    defenses += [(f"fgsm eps {e}", {"defense": "fgsm", "defense_eps": float(e), "attack": a.attack}) for e in a.eps.split(",")]
    anons = {name: Anonymizer(progress=False, seed=a.seed, **kw) for name, kw in defenses}
    rows = {name: {"id": [], "ra": [], "rec_dist": [], "out_dist": [], "psnr": [], "ssim": []} for name, _ in defenses}
    fallbacks = {name: 0 for name, _ in defenses}
    for k in tqdm(probes, desc="probes"):
        rgb = read_image(image_path(lfw, k))
        orig = faces[image_path(lfw, k)]
        d = det(rgb)
        i = match_face(orig.box, d.boxes)
        if i is None:
            continue
        exclude = (np.arange(len(gkeys)) == gindex[k]) if (gallery.names == k[0]).sum() > 1 else None
        base = None
        for name, _ in defenses:
            anon = anons[name]
            anon.reset(seed=file_seed(a.seed, f"{k[0]}_{k[1]}"))  # the same drawing under every defense
            img = anon.anonymize_image(rgb, d)
            if anon.outcomes[i] != "generated":
                fallbacks[name] += 1
                continue
            if name == "none":
                base = img
            d1 = det(img)
            j = match_face(orig.box, d1.boxes)
            box, lm = (d1.boxes[j], d1.landmarks[j]) if j is not None else (orig.box, orig.landmarks)
            e = dlib.embed(img, box, lm)
            rec = reconstruct(R, img, lm)
            e_rec = dlib.embed(rec, box, lm)
            m = rows[name]
            m["id"].append(retrieved(dlib, e, k[0], gallery, a.threshold, exclude))
            m["ra"].append(retrieved(dlib, e_rec, k[0], gallery, a.threshold, exclude))
            m["out_dist"].append(float(dlib.distances(e, orig.emb["dlib"][None])[0]))
            m["rec_dist"].append(float(dlib.distances(e_rec, orig.emb["dlib"][None])[0]))
            if base is not None and base.shape == img.shape:
                x1, y1, x2, y2 = (int(round(float(c))) for c in orig.box)
                ba, bb = base[max(y1, 0):y2, max(x1, 0):x2], img[max(y1, 0):y2, max(x1, 0):x2]
                m["psnr"].append(psnr(ba, bb))
                m["ssim"].append(ssim(ba, bb))
    report = {"attack": a.attack, "probes": len(probes), "threshold": a.threshold, "rows": []}
    for name, _ in defenses:
        m = rows[name]
        fin = [p for p in m["psnr"] if np.isfinite(p)]
        report["rows"].append({"defense": name, "faces": len(m["id"]), "fallback": fallbacks[name],
                               "ID": round(float(np.mean(m["id"])), 4), "RA": round(float(np.mean(m["ra"])), 4),
                               "out_dist_median": round(float(np.median(m["out_dist"])), 4),
                               "rec_dist_median": round(float(np.median(m["rec_dist"])), 4),
                               "rec_within_0.6": round(float(np.mean(np.array(m["rec_dist"]) < 0.6)), 4),
                               "psnr_db": round(float(np.mean(fin)), 2) if fin else None,
                               "ssim": round(float(np.mean(m["ssim"])), 4) if m["ssim"] else None})
        print(json.dumps(report["rows"][-1]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
