"""Choose verification's margin (AnonymizeConfig.verify_margin) on the selection split.

    python scripts/select_verify_margin.py [--n 200] [--start 0] [--out runs/verify_margin]

Probes: the first photo of the fold-1 identities `fiva evaluate` does not probe (its seeded
shuffle's identities 300 on) that have another photo, then fold-2 and fold-3 identities with one (training identities), up to N.
Each probe is anonymized with the CLI's defaults, every verified drawing recorded: the pipeline's
SFace distance to the probe's own embedding (and to flipped, blurred, shifted and downscaled
versions of its crop: other photos imitated), whether it was found in place and passed dlib, and
what `fiva evaluate` measures on it: the smallest SFace and dlib distances to the person's OTHER
photos. Verification is told every drawing failed, so each probe's whole retry sequence is drawn
(it does not depend on the outcomes) and any rule is replayed on the records: the first drawing
that passes is the one kept, none passing is the fallback (rules: "self", the drawing beyond VERIFY +
margin from the probe's own embedding, the pipeline's; "augmented", from the nearest of it and its
other-photo versions). --start skips the first probes: a held-out set to confirm a rule on. Writes attempts.json (distances only,
no embeddings) and prints the table: margin, drawn share, SFace and dlib leaks (a kept drawing
within the calibrated FAR-0.001 thresholds of another photo of its person: verified; and that photo
nearer than any other person's in the gallery of all probes' photos: retrieved, `fiva evaluate`'s ID).

With --iod N each probe photo is first shrunk (INTER_AREA) so its face's eyes lie N pixels apart,
as a face in a crowd: the drawings are made and judged at that size, against the person's other
photos at full size (an attacker's gallery). Each record then also holds the shrunk original's own
distances (`orig_*`: what the face gave away before it was anonymized) and the pixelated
fallback's (`pix_*`), the chance levels a drawing at that size is judged against.
"""
import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fiva.anonymize import native
from fiva.anonymize.baselines import obfuscate
from fiva.anonymize.frame import Anonymizer, AnonymizeConfig
from fiva.evaluate.lfw import evaluation_identities, identity_images, image_path, read_folds
from fiva.evaluate.models import embed_images, load_models
from fiva.faces import align_faces
from fiva.faces.detect import match_face
from fiva.faces.identity import to_tensor
from fiva.io import read_image

SFACE_EVAL, DLIB_EVAL = 0.6616, 0.5568  # `fiva evaluate`'s calibrated thresholds (FAR 0.001, all 6000 LFW pairs)
VERIFY = AnonymizeConfig.threshold  # verification's SFace threshold (the ITM's)
MARGINS = (0.0, 0.02, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)


def selection_probes(lfw: Path, n: int) -> list[str]:
    ids = evaluation_identities(lfw)
    order = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
    folds = read_folds(lfw / "people.txt")
    names = order[300:] + sorted(folds[1]) + sorted(folds[2])
    return [x for x in names if len(identity_images(lfw, x)) >= 2][:n]


def augmented(crop: np.ndarray) -> dict[str, np.ndarray]:
    """The aligned original [112,112,3] as another photo might show it."""
    m = np.float32([[1, 0, 3], [0, 1, 2]])
    small = cv2.resize(cv2.resize(crop, (40, 40), interpolation=cv2.INTER_AREA), (112, 112), interpolation=cv2.INTER_LINEAR)
    return {"flip": crop[:, ::-1].copy(), "blur": cv2.GaussianBlur(crop, (0, 0), 1.5),
            "shift": cv2.warpAffine(crop, m, (112, 112), borderMode=cv2.BORDER_REFLECT), "small": small}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--start", type=int, default=0, help="skip the first START probes (a held-out set to confirm a rule on)")
    ap.add_argument("--out", default="runs/verify_margin")
    ap.add_argument("--iod", type=float, default=None, help="shrink each probe photo so its face's eyes lie this many pixels apart")
    a = ap.parse_args()
    lfw, out = Path(a.lfw), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = selection_probes(lfw, a.start + a.n)[a.start:]
    models = load_models(("dlib", "sface"))
    keys = {x: identity_images(lfw, x) for x in names}
    faces = embed_images([image_path(lfw, k) for x in names for k in keys[x]], models, workers=1, progress=False)
    anon = Anonymizer(AnonymizeConfig(progress=False))  # the CLI's defaults (runner.build_config)
    real = native._still_same
    state: dict = {}

    def recording(anon, rgb, img, det, z_id, still, place=native.IN_PLACE, original=None):
        crop, _ = align_faces(img, det.landmarks, 112)
        e = anon._embed(to_tensor(crop).to(anon.device))[0]
        rec = {"self": 1.0 - float(e @ z_id)}
        ocrop, _ = align_faces(rgb, det.landmarks, 112)
        for k, c in augmented(ocrop[0]).items():
            z = anon._embed(to_tensor(c[None]).to(anon.device))[0]
            rec[k] = 1.0 - float(e @ z)
        rec["place"] = bool(anon._in_place(rgb, img, det, still, place)[0])
        if anon._dlib is not None:
            o = original if original is not None else anon._dlib.embed(rgb, det.boxes[0])
            rec["dlib"] = float(np.linalg.norm(o - anon._dlib.embed(img, det.boxes[0])))
            rec["dlib_ok"] = rec["dlib"] >= native.DLIB_MATCH
        else:
            rec["dlib_ok"] = True
        probe = state["face"]
        if match_face(probe.box, det.boxes) is not None:  # the probe's own face: what `fiva evaluate` measures
            d1 = anon.detector(img)
            j = match_face(probe.box, d1.boxes)
            box, lm = (d1.boxes[j], d1.landmarks[j]) if j is not None else (probe.box, probe.landmarks)
            for n, m in models.items():
                q = m.embed(img, box, lm)
                rec[f"eval_{n}"] = float(m.distances(q, state["others"][n]).min())
                rec[f"rest_{n}"] = float(m.distances(q, state["rest"][n]).min())  # the nearest other person's photo
            state["attempts"].append(rec)
        return True  # every drawing "fails": the whole retry sequence is drawn

    native._still_same = recording
    rows, t0 = [], time.time()
    try:
        for i, x in enumerate(names):
            face = faces.get(image_path(lfw, keys[x][0]))
            others = [faces.get(image_path(lfw, k)) for k in keys[x][1:]]
            others = [f for f in others if f is not None]
            if face is None or not others:
                continue
            rest = [f for y in names if y != x for f in (faces.get(image_path(lfw, k)) for k in keys[y]) if f is not None]
            state.update(face=face, attempts=[], others={n: np.stack([f.emb[n] for f in others]) for n in models},
                         rest={n: np.stack([f.emb[n] for f in rest]) for n in models})
            rgb = read_image(image_path(lfw, keys[x][0]))
            row = {"probe": i, "others": len(others)}
            if a.iod:
                s = a.iod / float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
                rgb = cv2.resize(rgb, (max(round(rgb.shape[1] * s), 1), max(round(rgb.shape[0] * s), 1)), interpolation=cv2.INTER_AREA)
                d0 = anon.detector(rgb)
                j = match_face(face.box * s, d0.boxes)
                if j is None:
                    continue
                state["face"] = type(face)(d0.boxes[j], d0.landmarks[j], {})
                for tag, img in (("orig", rgb), ("pix", obfuscate(rgb, d0[np.array([j])], "pixelate"))):
                    for n, m in models.items():
                        q = m.embed(img, d0.boxes[j], d0.landmarks[j])
                        row[f"{tag}_eval_{n}"] = float(m.distances(q, state["others"][n]).min())
                        row[f"{tag}_rest_{n}"] = float(m.distances(q, state["rest"][n]).min())
            anon.reset(seed=0)
            anon.anonymize_image(rgb)
            row["attempts"] = state["attempts"]
            rows.append(row)
            print(f"{i + 1}/{len(names)} {time.time() - t0:.0f}s attempts {len(state['attempts'])}", flush=True)
    finally:
        native._still_same = real
    (out / "attempts.json").write_text(json.dumps(rows))
    print(table(rows))


def passes(rec: dict, margin: float, rule: str) -> bool:
    d = rec["self"] if rule == "self" else min(rec[k] for k in ("self", "flip", "blur", "shift", "small"))
    return d >= VERIFY + margin and rec["place"] and rec["dlib_ok"]


def table(rows: list[dict]) -> str:
    lines = [f"{len(rows)} probes; rule, margin: drawn, leaks by SFace and dlib (kept drawings verified / retrieved as their person)"]
    for tag, what in (("orig", "the shrunk original"), ("pix", "the pixelated fallback")):  # --iod's chance levels
        got = [r for r in rows if f"{tag}_eval_sface" in r]
        if got:
            sf = sum(r[f"{tag}_eval_sface"] < min(SFACE_EVAL, r[f"{tag}_rest_sface"]) for r in got)
            dl = sum(r[f"{tag}_eval_dlib"] < min(DLIB_EVAL, r[f"{tag}_rest_dlib"]) for r in got)
            lines.append(f"{what}: SFace retrieved {sf} ({sf / len(got):.1%}), dlib retrieved {dl} ({dl / len(got):.1%})")
    for rule in ("self", "augmented"):
        for m in MARGINS:
            drawn = sf = dl = sf_id = dl_id = 0
            for r in rows:
                kept = next((rec for rec in r["attempts"] if passes(rec, m, rule)), None)
                if kept is None:
                    continue
                drawn += 1
                sf += kept.get("eval_sface", 9) < SFACE_EVAL
                dl += kept.get("eval_dlib", 9) < DLIB_EVAL
                # `fiva evaluate`'s ID retrieval: the nearest photo is the person's own, within the threshold
                sf_id += kept.get("eval_sface", 9) < min(SFACE_EVAL, kept.get("rest_sface", 9))
                dl_id += kept.get("eval_dlib", 9) < min(DLIB_EVAL, kept.get("rest_dlib", 9))
            lines.append(f"{rule:9s} {m:.2f}: drawn {drawn}/{len(rows)} ({drawn / max(1, len(rows)):.1%}), "
                         f"SFace verified {sf} ({sf / max(1, len(rows)):.1%}) retrieved {sf_id} ({sf_id / max(1, len(rows)):.1%}), "
                         f"dlib verified {dl} retrieved {dl_id}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
