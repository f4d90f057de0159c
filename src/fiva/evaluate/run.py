"""`fiva evaluate`: the paper's Tables 1-2 metrics on real data (Section 3.5), with baselines.

1. Calibrate a threshold per identity model (dlib evaluator, SFace) at FAR 0.001 on the LFW pairs.
2. Probes: one image each of LFW evaluation identities (fold 1). Every method anonymizes every
   probe; the output's face is searched in a gallery of the evaluation identities' originals
   (the probe's own original only where the person has no other image):
   ID (dlib and SFace), ¬ID (SFace, negated embedding), landmark and head-pose error, detection.
3. Videos: N frames of each clip; the main face's evaluator embeddings give Eq. 7's M_tc.
4. Report: Markdown, JSON, plots (see report.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..anonymize.frame import Anonymizer, AnonymizeConfig
from ..faces import FaceDetector
from ..io import VIDEO_EXTS, read_image
from . import calibrate as C
from .lfw import evaluation_identities, identity_images, image_path, read_pairs, subsample_pairs
from ..faces.detect import match_face
from .metrics import Gallery, landmark_error, pose_error, retrieved, temporal_consistency
from .models import embed_images, load_models

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One line of Table 1: a method and its settings (None: the unmodified data)."""

    label: str
    settings: dict | None
    notes: str = ""


def default_rows() -> list[Row]:
    fiva = {"method": "fiva", "fallback": "none", "defense": "none"}  # the method itself; defenses: Table 3
    return [
        Row("Real Data", None),
        Row("Blur", {"method": "blur"}, "inpainting-style baseline"),
        Row("Pixelate", {"method": "pixelate"}),
        Row("Black mask", {"method": "mask"}),
        Row("FIVA", {**fiva, "identity": "own"}, "conditioned on the face's own identity, no sampling"),
        Row("FIVA + Sampling", {**fiva, "identity": "sample"}, "a new anchor for every face"),
        Row("FIVA + ITM", {**fiva, "identity": "itm"}, "anchor sampling and tracking (Algorithm 1)"),
        Row("fiva anonymize (default)", {"method": "fiva", "generator": AnonymizeConfig.generator},
            "what the CLI writes: anchor faces + ITM, with verification and the pixelate fallback"),
    ]


@dataclass
class EvalConfig:
    lfw: str = "../shared/data/lfw"
    videos: str = "../shared/data/videos"
    out: str = "runs/evaluate"
    probes: int = 300
    frames: int = 10
    far: float = 0.001
    limit: int | None = None  # quick run: N probes, a gallery of 4N identities, N videos, 10N pairs
    # The FIVA rows, RA, the defense sweep and the fake detection measure this generator: by
    # default what `fiva anonymize` draws with (anchor faces); "fiva": the 112 px network.
    generator: str = AnonymizeConfig.generator
    model: str | None = None
    anchors: str | None = None
    seed: int = 0
    workers: int | None = None
    contact_sheet: int = 8
    progress: bool = True
    benchmarks: str | None = None  # a Markdown file whose evaluation section is replaced
    swap_pairs: int = 100  # face-swap pairs for the Table 4 section (0: none)
    attack: str | None = None  # reconstruction attack R (.safetensors) for the RA column; None: no RA
    defense_probes: int = 100  # probes for the defense sweep (Table 3, Figure 3; needs `attack`)
    fake_detector: str | None = None  # fake detector `fiva detect-fake` uses (default: the shipped one, if present); '' for none
    rows: list[Row] = field(default_factory=default_rows)


def _probe_plan(cfg: EvalConfig, lfw: Path):
    """Probe identities (seeded shuffle of fold 1) and the gallery identities."""
    ids = evaluation_identities(lfw)
    order = [ids[i] for i in np.random.default_rng(cfg.seed).permutation(len(ids))]
    n_probe = min(cfg.limit or cfg.probes, cfg.probes, len(order))
    gallery_ids = sorted(order[: 4 * n_probe]) if cfg.limit else sorted(ids)
    return order[:n_probe], gallery_ids


def _anonymizers(cfg: EvalConfig) -> dict[str, Anonymizer | None]:
    out = {}
    for row in cfg.rows:
        if row.settings is None:
            out[row.label] = None
            continue
        ac = AnonymizeConfig(generator=cfg.generator, model=cfg.model, anchors=cfg.anchors, seed=cfg.seed, progress=False)
        for k, v in row.settings.items():
            setattr(ac, k, v)
        out[row.label] = Anonymizer(ac)
    return out


@dataclass
class Prepared:
    """What every section of an evaluation measures against: identity models and their calibrated
    thresholds, the gallery (embeddings in memory only) and the probes."""

    lfw: Path
    models: dict
    detector: FaceDetector
    pairs: list
    cals: dict
    thr: dict[str, float]
    faces: dict
    gallery: Gallery
    gindex: dict
    probes: list
    gallery_ids: list
    gkeys: list


def prepare(cfg: EvalConfig, model_names=("dlib", "sface"), thresholds: dict[str, float] | None = None) -> Prepared:
    """Steps 1-2 of the evaluation: calibration (cached; skipped for the models `thresholds` gives),
    the gallery's embeddings and the probes."""
    lfw = Path(cfg.lfw)
    for need in (lfw / "pairs.txt", lfw / "people.txt", lfw / "images"):
        if not need.exists():
            raise FileNotFoundError(f"{need}: LFW data not found (see --lfw)")
    models = load_models(model_names)
    detector = FaceDetector()

    # 1. Calibration (cached: thresholds and pair distances, never embeddings).
    pairs = subsample_pairs(read_pairs(lfw / "pairs.txt"), 10 * cfg.limit if cfg.limit else None)
    pair_key = [[list(a), list(b), s] for a, b, s in pairs]
    given = thresholds or {}
    cals = {n: C.load_cached(n, pair_key, cfg.far) for n in models if n not in given}
    probe_ids, gallery_ids = _probe_plan(cfg, lfw)
    gallery_keys = [k for name in gallery_ids for k in identity_images(lfw, name)]
    paths = [image_path(lfw, k) for k in gallery_keys]
    if any(c is None for c in cals.values()):
        paths += [image_path(lfw, k) for a, b, _ in pairs for k in (a, b)]
    faces = embed_images(paths, models, cfg.workers, cfg.progress)
    for n, m in models.items():
        if n in given:
            continue
        if cals[n] is None:
            cals[n] = C.calibrate(m, pairs, faces, lfw, cfg.far)
            C.save_cached(cals[n], pair_key)
        log.info("%s threshold %.4f at FAR %.4f (TAR %.4f)", n, cals[n].threshold, cfg.far, cals[n].tar)
    thr = {**{n: c.threshold for n, c in cals.items()}, **given}

    # 2. Gallery and probes.
    gkeys = [k for k in gallery_keys if faces.get(image_path(lfw, k)) is not None]
    gallery = Gallery({n: np.stack([faces[image_path(lfw, k)].emb[n] for k in gkeys]) for n in models},
                      np.array([k[0] for k in gkeys]))
    gindex = {k: i for i, k in enumerate(gkeys)}
    probes = []
    for name in probe_ids:
        keys = [k for k in identity_images(lfw, name) if k in gindex]
        if keys:
            probes.append(keys[0])
    return Prepared(lfw, models, detector, pairs, cals, thr, faces, gallery, gindex, probes, gallery_ids, gkeys)


def evaluate(cfg: EvalConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.out)
    P = prepare(cfg)
    out.mkdir(parents=True, exist_ok=True)
    lfw, models, detector, pairs, cals, thr, faces = P.lfw, P.models, P.detector, P.pairs, P.cals, P.thr, P.faces
    gallery, gindex, probes, gallery_ids, gkeys = P.gallery, P.gindex, P.probes, P.gallery_ids, P.gkeys
    anonymizers = _anonymizers(cfg)
    per_row = {r.label: {"id_dlib": [], "id_sface": [], "neg_id": [], "detected": [], "lmk": [], "pose": [],
                         "dist_dlib": [], "dist_sface": [], "ra": []} for r in cfg.rows}
    attack = None
    if cfg.attack:
        from ..models.attack import load_attack

        attack = load_attack(cfg.attack)
        from ..faces.identity import DlibEvaluator
        from .fakes import scores as fake_score, stored_score

        dlib_eval = DlibEvaluator()
        score_kind, shipped_threshold = stored_score(cfg.attack)
    detect_scores: dict[str, list[float]] = {}
    fake_det, det_threshold, det_scores = _load_fake_detector(cfg), None, {}
    if fake_det is not None:
        from .fakes import detector_scores, stored_detector_threshold

        det_threshold = stored_detector_threshold(cfg.fake_detector or _default_detector())
    sheet: dict[str, list] = {r.label: [] for r in cfg.rows}
    for k in tqdm(probes, desc="probes", unit="face", disable=not cfg.progress):
        rgb = read_image(image_path(lfw, k))
        orig = faces[image_path(lfw, k)]
        exclude = (gallery.names == k[0]) & (np.arange(len(gkeys)) == gindex[k])
        if (gallery.names == k[0]).sum() == 1:
            exclude = None  # no other image of this person: the gallery holds the original itself
        dets = detector(rgb)
        for row in cfg.rows:
            anon = anonymizers[row.label]
            if anon is not None and row.settings.get("identity") != "itm":
                anon.reset()  # ITM rows track across the whole probe set, like a dataset run
            img = rgb if anon is None else anon.anonymize_image(rgb, dets)
            m = per_row[row.label]
            d1 = detector(img)
            j = match_face(orig.box, d1.boxes)
            m["detected"].append(j is not None)
            box, lm = (d1.boxes[j], d1.landmarks[j]) if j is not None else (orig.box, orig.landmarks)
            if j is not None:
                m["lmk"].append(landmark_error(orig.landmarks, lm))
                m["pose"].append(pose_error(orig.landmarks, lm, rgb.shape[:2]))
            for n, model in models.items():
                e = model.embed(img, box, lm)
                m[f"id_{n}"].append(retrieved(model, e, k[0], gallery, thr[n], exclude))
                m[f"dist_{n}"].append(float(model.distances(e, orig.emb[n][None])[0]))
                if n == "sface":
                    m["neg_id"].append(retrieved(model, -e, k[0], gallery, thr[n], exclude))
            one = dets[np.array([dets.largest()])] if len(dets) else dets
            if attack is not None and row.label in ("Real Data", "Blur", "FIVA + ITM") and len(one):  # R as a fake detector
                detect_scores.setdefault(row.label, []).append(float(fake_score(score_kind, attack, img, one, dlib_eval)[0]))
            if fake_det is not None and row.label in ("Real Data", "Blur", "FIVA + ITM") and len(one):  # the shipped detector
                det_scores.setdefault(row.label, []).append(float(detector_scores(fake_det, img, one)[0]))
            if attack is not None and anon is not None and anon.generator is not None:
                # RA: the attacker runs R on the anonymized face, then searches the gallery.
                rec = reconstruct(attack, img, lm)
                e = models["dlib"].embed(rec, box, lm)
                m["ra"].append(retrieved(models["dlib"], e, k[0], gallery, thr["dlib"], exclude))
            if len(sheet[row.label]) < cfg.contact_sheet:
                sheet[row.label].append(_face_crop(img, orig.box))

    # 2b. Face swapping (Table 4): probe i's face gets probe i+1's identity.
    swap = _swap_table(cfg, lfw, probes, gallery, gindex, models, thr, faces, detector) if cfg.swap_pairs else []
    defenses = []
    if attack is not None and cfg.defense_probes:  # Table 3 and Figure 3
        from .defenses import defense_table

        defenses = defense_table(cfg, lfw, probes[: cfg.defense_probes], attack, cfg.attack, gallery, gindex, models, thr,
                                 faces, detector)

    # 3. Temporal consistency on videos.
    videos = sorted(p for p in Path(cfg.videos).glob("*") if p.suffix.lower() in VIDEO_EXTS) if cfg.videos else []
    if cfg.limit:
        videos = videos[: cfg.limit]
    temporal = {r.label: {} for r in cfg.rows}
    for v in tqdm(videos, desc="videos", unit="video", disable=not cfg.progress):
        _video_consistency(v, cfg, detector, models["dlib"], anonymizers, temporal)

    # 4. Tables.
    table = []
    for row in cfg.rows:
        m, t = per_row[row.label], temporal[row.label]
        mus = [x["mu"] for x in t.values()]
        sig = [x["sigma"] for x in t.values()]
        table.append({
            "method": row.label, "notes": row.notes,
            "ID": _mean(m["id_dlib"]), "ID_sface": _mean(m["id_sface"]), "negID": _mean(m["neg_id"]), "RA": _mean(m["ra"]),
            "Mtc_mu": _mean(mus), "Mtc_sigma": _mean(sig),
            "detection_rate": _mean(m["detected"]), "landmark_error": _mean(m["lmk"]), "pose_error_deg": _mean(m["pose"]),
            "dlib_distance_mean": _mean(m["dist_dlib"]),
            "beyond_dlib_threshold": _mean([d >= thr["dlib"] for d in m["dist_dlib"]]),
        })
    result = {
        "table": table,
        "swap": swap,
        "defenses": defenses,
        "fake_detection": _fake_detection(detect_scores, score_kind, shipped_threshold) if attack is not None else {},
        "fake_detection_detector": _fake_detection(det_scores, "detector", det_threshold) if fake_det is not None else {},
        "calibration": {n: c.summary() for n, c in cals.items()},
        "data": {
            "lfw": str(lfw), "probes": len(probes), "probe_split": "LFW evaluation identities (fold 1 of people.txt)",
            "gallery_identities": len(gallery_ids), "gallery_images": len(gkeys),
            "calibration_pairs": len(pairs), "calibration_note": "pairs.txt overlaps training and evaluation identities",
            "videos": [v.name for v in videos], "frames_per_video": cfg.frames, "limit": cfg.limit,
        },
        "models": _model_versions(cfg),
        "temporal": {label: {v: {"mu": x["mu"], "sigma": x["sigma"], "frames": x["frames"]} for v, x in t.items()}
                     for label, t in temporal.items()},
        "seconds": round(time.time() - t_start, 1),
        "config": {k: v for k, v in asdict(cfg).items() if k != "rows"},
    }
    from .report import write_report

    write_report(result, out, cals, per_row, temporal, sheet, cfg)
    return result


# Table 4's rows: (label, generator, conditioning sign for a network; None: the generator's own)
SWAP_ROWS = (
    ("fiva swap (anchor-face: the source's face drawn on the target)", "anchor-face", None),
    ("fiva swap --generator fiva (112 px network, z = -z_source)", "fiva", -1),
    ("112 px network, z = +z_source", "fiva", 1),
)


def _swap_table(cfg, lfw, probes, gallery, gindex, models, thr, faces, detector, rows=SWAP_ROWS, render=None) -> list[dict]:
    """Table 4: ID = share of swapped faces whose nearest gallery identity is the SOURCE (higher is
    better; the source photo itself is left out of the gallery where the person has another), at
    the calibrated dlib threshold; ID (target): still retrieved as the target; pose error against
    the target. One row per (label, generator, sign) of `rows`, run as `fiva swap` writes (no
    fallback, no defense); `render`: the anchor-face renderer's RenderConfig (default SWAP_RENDER)."""
    n = min(cfg.swap_pairs, len(probes) - 1)
    out = []
    for label, generator, sign in rows:
        model = cfg.model if generator == cfg.generator else None
        anon = Anonymizer(AnonymizeConfig(generator=generator, model=model, identity="swap", swap_source=str(image_path(lfw, probes[0])),
                                          fallback="none", verify=False, defense="none", progress=False))
        ids, tgt_ids, poses, d_src, d_tgt = [], [], [], [], []
        for i in range(n):
            src_key, tgt_key = probes[i + 1], probes[i]
            anon.set_swap_source(read_image(image_path(lfw, src_key)), render=render, sign=sign)
            rgb = read_image(image_path(lfw, tgt_key))
            orig = faces[image_path(lfw, tgt_key)]
            out_img = anon.anonymize_image(rgb, detector(rgb))
            d1 = detector(out_img)
            j = match_face(orig.box, d1.boxes)
            box, lm = (d1.boxes[j], d1.landmarks[j]) if j is not None else (orig.box, orig.landmarks)
            if j is not None:
                poses.append(pose_error(orig.landmarks, lm, rgb.shape[:2]))
            e = models["dlib"].embed(out_img, box, lm)
            src_excl = np.arange(len(gallery.names)) == gindex[src_key] if (gallery.names == src_key[0]).sum() > 1 else None
            ids.append(retrieved(models["dlib"], e, src_key[0], gallery, thr["dlib"], src_excl))
            tgt_ids.append(retrieved(models["dlib"], e, tgt_key[0], gallery, thr["dlib"], None))
            d_src.append(float(models["dlib"].distances(e, faces[image_path(lfw, src_key)].emb["dlib"][None])[0]))
            d_tgt.append(float(models["dlib"].distances(e, orig.emb["dlib"][None])[0]))
        out.append({"method": label, "pairs": n, "ID_source": _mean(ids), "ID_target": _mean(tgt_ids),
                    "pose_error_deg": _mean(poses), "dlib_to_source": _mean(d_src), "dlib_to_target": _mean(d_tgt)})
    return out


def _default_detector() -> str:
    from ..weights import DEFAULT_DETECTOR

    return str(DEFAULT_DETECTOR)


def _load_fake_detector(cfg: EvalConfig):
    """The fake detector `fiva detect-fake` uses (cfg.fake_detector, else the shipped one when present)."""
    if cfg.fake_detector == "":
        return None
    path = cfg.fake_detector or _default_detector()
    if not cfg.fake_detector and not Path(path).exists():
        return None
    from ..models.detector import load_detector

    return load_detector(path)


def _fake_detection(scores: dict[str, list[float]], kind: str, shipped: float | None) -> dict:
    """ROC of the R-based fake score `kind`: real probes against FIVA's outputs (what R was trained
    on) and against blurred ones (a manipulation it was not trained on). The threshold is chosen on
    every other real probe and its false-positive rate measured on the rest (held out from that
    choice). With the threshold stored with R (`shipped`, what `fiva detect-fake` uses): the share
    of real and manipulated faces it calls right, over all probes (none of them chose it)."""
    from .fakes import roc

    if "Real Data" not in scores:
        return {}
    real = np.asarray(scores["Real Data"], float)
    calib, test = (real[0::2], real[1::2]) if len(real) >= 4 else (None, real)
    out = {name: roc(test, scores[name], calib) for name in ("FIVA + ITM", "Blur") if name in scores}
    if shipped is not None:
        for name in out:
            fake = np.asarray(scores[name], float)
            out[name]["shipped_threshold"] = shipped
            out[name]["accuracy_at_shipped"] = float((np.sum(real <= shipped) + np.sum(fake > shipped)) / (len(real) + len(fake)))
            out[name]["fpr_at_shipped"] = float(np.mean(real > shipped))
    out["score"] = kind
    out["scores"] = {k: [round(v, 4) for v in vals] for k, vals in scores.items()}
    return out


@torch.no_grad()
def reconstruct(attack, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The image with R applied to the face at `landmarks` (aligned crop in, pasted back)."""
    from ..faces import align_faces
    from ..faces.align import feather_mask, paste_change
    from ..faces.identity import to_tensor, to_uint8

    crops, mats = align_faces(rgb, landmarks[None], attack.resolution)
    out = to_uint8(attack(to_tensor(crops)))[0]
    # Only what R changes reaches the image (the crop's own resampling is a blur that can tip a
    # near-tie in retrieval by itself).
    change = paste_change(rgb, crops[0], out, mats[0], feather_mask(attack.resolution, 0.06))
    return np.clip(rgb.astype(np.int16) + change, 0, 255).astype(np.uint8)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _face_crop(rgb: np.ndarray, box: np.ndarray, size: int = 112, scale: float = 1.5) -> np.ndarray:
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * scale / 2
    M = np.array([[size / (2 * half), 0, size / 2 - cx * size / (2 * half)], [0, size / (2 * half), size / 2 - cy * size / (2 * half)]])
    return cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def _video_consistency(path: Path, cfg: EvalConfig, detector, dlib_model, anonymizers, temporal) -> None:
    """Eq. 7 for one clip and every row: the main face (largest in the first frame it appears in,
    then the nearest face in each later frame), embedded by the evaluator in each of N frames."""
    from ..anonymize.video import read_frames

    frames = read_frames(path, cfg.frames)
    track, prev = [], None
    for rgb in frames:
        d = detector(rgb)
        if len(d) == 0:
            continue
        if prev is None:
            i = d.largest()
        else:
            c = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2
            i = int(np.argmin(np.linalg.norm(c - (prev[:2] + prev[2:]) / 2, axis=1)))
        prev = d.boxes[i]
        track.append((rgb, d, i))
    if len(track) < 2:
        log.warning("%s: a face in fewer than 2 of %d frames; skipped", path.name, len(frames))
        return
    for row in cfg.rows:
        anon = anonymizers[row.label]
        if anon is not None:
            anon.reset()  # a new video
        embs = []
        for rgb, d, i in track:
            img = rgb if anon is None else anon.anonymize_image(rgb, d)
            found = detector(img).boxes
            j = match_face(d.boxes[i], found)
            if j is not None:  # a face nobody can find has no identity to be consistent about
                embs.append(dlib_model.embed(img, found[j], None))
        if len(embs) < 2:
            continue
        mu, sigma, D = temporal_consistency(np.stack(embs))
        temporal[row.label][path.name] = {"mu": mu, "sigma": sigma, "frames": len(embs), "D": D}


def _model_versions(cfg: EvalConfig) -> dict:
    import hashlib

    from ..weights import DEFAULT_ANCHORS, DEFAULT_FACE_BANK, DEFAULT_GENERATOR, dlib_model_paths, metadata, sface_onnx_path, yunet_path

    def sha(p: Path) -> str:
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]

    if cfg.generator == "anchor-face":
        gen = Path(DEFAULT_FACE_BANK)
        generator = {"name": "anchor-face", "file": gen.name, "sha256": sha(gen), "step": None}
    else:
        gen = Path(cfg.model) if cfg.model else DEFAULT_GENERATOR
        generator = {"name": cfg.generator, "file": gen.name, "sha256": sha(gen), "step": metadata(gen).get("step")}
    attack = {}
    if cfg.attack:
        meta = metadata(cfg.attack)
        attack = {"file": Path(cfg.attack).name, "sha256": sha(cfg.attack), "step": meta.get("step"),
                  "trained_against": meta.get("trained_against")}
    fake_detector = {}
    det_path = None if cfg.fake_detector == "" else Path(cfg.fake_detector or _default_detector())
    if det_path is not None and det_path.exists():
        meta = metadata(det_path)
        fake_detector = {"file": det_path.name, "sha256": sha(det_path), "step": meta.get("step"),
                         "threshold": meta.get("fake_threshold"), "threshold_chosen_on": meta.get("threshold_chosen_on"),
                         "trained_against": meta.get("trained_against")}
    return {
        "generator": generator,
        "attack": attack,
        "fake_detector": fake_detector,
        "date": time.strftime("%Y-%m-%d"),
        "anchors": {"file": Path(cfg.anchors or DEFAULT_ANCHORS).name, "sha256": sha(cfg.anchors or DEFAULT_ANCHORS)},
        "detector": {"file": yunet_path().name, "sha256": sha(yunet_path())},
        "sface": {"file": sface_onnx_path().name, "sha256": sha(sface_onnx_path())},
        "dlib": {"file": dlib_model_paths()[0].name, "sha256": sha(dlib_model_paths()[0])},
    }
