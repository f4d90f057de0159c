"""The one door in: `fiva anonymize | swap | evaluate | detect-fake | train generator|attack|pairs|detector|refiner | anchors build | identities purge`."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .anonymize.itm import DEFAULT_THRESHOLD, VERIFY_MARGIN
from .io import MAX_PIXELS

log = logging.getLogger("fiva")


# `fiva train generator` flags for TrainConfig's loss weights (defaults stay in TrainConfig)
LOSS_FLAGS = (("w_id", "counterfactual identity loss (Eq. 4, hinged)", float), ("id_margin", "identity hinge margin", float),
              ("id_clean_share", "share of samples whose identity losses see undegraded faces", float),
              ("id_warmup", "steps over which the identity weight ramps up", int), ("w_ifsr", "IFSR", float),
              ("w_rec_low", "low-pass L1", float), ("rec_low_factor", "low-pass L1 at 1/F resolution", int), ("w_rec", "L1", float), ("w_hf", "Laplacian L1", float),
              ("w_mask", "mask loss", float), ("w_adv", "adversarial loss", float), ("r1", "R1 penalty", float),
              ("donor_share", "share of each batch with another person's face as the inner-face target (train/donors.py)", float),
              ("donor_pool", "structural neighbours a donor is drawn from", int),
              ("donor_mix", "donors averaged into one target (and their identities into one condition)", int),
              ("w_donor_rec", "L1 to the donor target inside the face ellipse (0: low-pass only)", float),
              ("donor_mean_face", "share of the training faces' mean face in the donor target", float),
              ("w_id_to", "pull of donor-guided outputs towards the donor's identity", float))


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train models")
    tsub = p.add_subparsers(dest="what", required=True)
    g = tsub.add_parser("generator", help="train the FIVA generator (runs under torchrun with DDP unchanged)")
    _add_training_common(g, "runs/generator")
    g.add_argument("--val-data", default=None, help="held-out folder or crop pack for the validation pass (default: none)")
    g.add_argument("--model", default="fiva-112", help="architecture: fiva-112 (CPU default), fiva-112-mod (plus identity at every decoder scale; "
                   "grows from a fiva-112 checkpoint), fiva-112-lp8 (sees only the 14x14 low-pass of the inner face), fiva-112-lp8w / -lp16w (a wider ellipse, seen as its 14x14 / 7x7 low-pass), fiva-112-mf (a wider ellipse, seen as the training faces' mean face in its colours) or fiva-256 (the paper's) (default: fiva-112)")
    g.add_argument("--lr", type=float, default=1e-4, help="generator Adam learning rate (default: 1e-4)")
    g.add_argument("--lr-d", type=float, default=4e-4, help="discriminator Adam learning rate (default: 4e-4)")
    g.add_argument("--val-every", type=int, default=500, help="validation pass every N steps (default: 500)")
    g.add_argument("--keep-generators", action="store_true", help="also keep the generator weights of every save as generator_STEP.safetensors")
    g.add_argument("--free-inner", action="store_true", help="inside the face ellipse keep only the low-pass L1 and the amount of "
                   "fine detail of X_t (no full or Laplacian L1: the detail carries identity)")
    g.add_argument("--ema", type=float, default=0.0, help="keep a moving average of the generator's weights with this decay (e.g. 0.999) and "
                   "validate, sample and save that (default: 0 = off)")
    g.add_argument("--prior-faces", type=int, default=0, help="fiva-112-mf: its prior face is the mean of this many training faces, "
                   "drawn with --prior-seed (default: 0 = all; given on a resume, it replaces the resumed prior)")
    g.add_argument("--prior-seed", type=int, default=0, help="which training faces --prior-faces draws (default: 0)")
    w = g.add_argument_group("loss weights (paper Section 3.4; unset: the shipped model's recipe, see MODEL_CARD.md)")
    for name, what, kind in LOSS_FLAGS:
        w.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=what)
    a = tsub.add_parser("attack", help="train the reconstruction attack R against an anonymizer (black-box; paper Eq. 5-6)")
    _add_training_common(a, "runs/attack", data_required=False)
    a.add_argument("--generator", default="fiva", help="the attacked generator (default: fiva)")
    a.add_argument("--model", default=None, help="its weights (default: the shipped fiva-112)")
    a.add_argument("--pairs", default=None, help="train on stored pairs from `fiva train pairs` (what fiva anonymize writes, e.g. with "
                   "the default anchor-face renderer) instead of running --generator in the loop; --data is then not read (default: none)")
    a.add_argument("--lr", type=float, default=1e-4, help="R's Adam learning rate (default: 1e-4)")
    a.add_argument("--real-share", type=float, default=0.0, help="share of each batch that is an untouched real face R must give back "
                   "unchanged (sharpens R as a deepfake detector, Section 3.6) (default: 0)")
    d = tsub.add_parser("detector", help="train the fake detector `fiva detect-fake` uses: real faces against anonymized ones from stored pairs")
    d.add_argument("--pairs", required=True, help="pairs folder(s) from `fiva train pairs`, comma-separated (real X_t vs anonymized X_c)")
    d.add_argument("--out", default="runs/detector", help="output folder: detector.safetensors, log.csv, summary.json (default: runs/detector)")
    d.add_argument("--steps", type=int, default=6000, help="training steps (default: 6000)")
    d.add_argument("--batch", type=int, default=32, help="batch size, half real half fake (default: 32)")
    d.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate, one-cycle schedule (default: 1e-3)")
    d.add_argument("--blur-share", type=float, default=0.2, help="share of the fakes that are blurred real faces (default: 0.2)")
    d.add_argument("--val-share", type=float, default=0.1, help="share of identities held out to choose the threshold (default: 0.1)")
    d.add_argument("--threshold-quantile", type=float, default=0.98,
                   help="the threshold is this quantile of the held-out real faces' scores (default: 0.98, 2%% false positives: the shipped detector's)")
    d.add_argument("--time-limit", type=float, default=0.0, help="stop after this many seconds (default: 0 = no limit)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--init", default=None, help="fine-tune this detector (e.g. src/fiva/data/fake-detector.safetensors, the shipped one) "
                   "on the pairs instead of training from scratch: for pairs of a newer pipeline when the older pairs are gone (default: none)")
    f = tsub.add_parser("refiner", help="train the refiner that makes the anchor-face renderer's drawings look like photographs "
                        "(adversarial against real faces, low frequencies and identity held) from stored pairs")
    f.add_argument("--pairs", required=True, help="pairs folder(s) from `fiva train pairs`, comma-separated")
    f.add_argument("--out", default="runs/refiner", help="output folder: refiner.safetensors, snapshots, log.csv, samples.png (default: runs/refiner)")
    f.add_argument("--steps", type=int, default=20000, help="training steps (default: 20000)")
    f.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    f.add_argument("--w-low", type=float, default=20.0, help="weight of the L1 between drawing and refinement pooled to 8x8 cells (default: 20)")
    f.add_argument("--w-full", type=float, default=1.0, help="weight of their full-resolution L1 (default: 1)")
    f.add_argument("--w-id", type=float, default=10.0, help="weight of the hinge keeping SFace from coming back to the original (default: 10)")
    f.add_argument("--coarse", type=int, default=1, help="the correction is smooth on a grid this many pixels coarser (default: 1)")
    f.add_argument("--d-scale", type=int, default=1, help="the discriminator sees faces shrunk this many times (default: 1)")
    f.add_argument("--time-limit", type=float, default=0.0, help="stop after this many seconds (default: 0 = no limit)")
    f.add_argument("--snapshot-every", type=float, default=0.0, help="keep a snapshot every this many seconds (default: 0 = none)")
    f.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    r = tsub.add_parser("pairs", help="render training pairs for the attack R with fiva anonymize's default pipeline (generated faces only)")
    r.add_argument("--data", required=True, help="folder of face images, e.g. runs/lfw/train (LFW training identities: scripts/prepare_lfw.py)")
    r.add_argument("--out", default="runs/attack_pairs", help="pairs folder (shards pairs-NNNN.npz; resumes) (default: runs/attack_pairs)")
    r.add_argument("--max-pairs", type=int, default=4000, help="stop after this many pairs in the folder (default: 4000)")
    r.add_argument("--time-limit", type=float, default=0.0, help="stop after this many seconds (default: 0 = no limit)")
    r.add_argument("--generator", default="anchor-face", help="the anonymizer's generator (default: anchor-face, fiva anonymize's default)")
    r.add_argument("--seed", type=int, default=0, help="image order and anonymizer seed (default: 0)")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_training_common(p, out: str, data_required: bool = True) -> None:
    p.add_argument("--data", required=data_required, help="folder of face images (aligned once and cached) or a crop pack .npz")
    p.add_argument("--out", default=out, help=f"output folder: checkpoints, log.csv, sample grids (default: {out})")
    p.add_argument("--steps", type=int, default=1000, help="train until this global step (default: 1000)")
    p.add_argument("--batch", type=int, default=16, help="batch size per process (default: 16)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (default: OUT/checkpoint.safetensors if present)")
    p.add_argument("--sample-every", type=int, default=200, help="sample grid PNG every N steps (default: 200)")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop (and save) after this many seconds (default: 0 = no limit)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_anchors(sub) -> None:
    p = sub.add_parser("anchors", help="the anchor search space of fake identities")
    asub = p.add_subparsers(dest="what", required=True)
    b = asub.add_parser("build", help="build the anchor space from identity folders (one sub-folder per person)")
    b.add_argument("--data", required=True, help="folder with one sub-folder of face images per identity, or a crop pack .npz")
    b.add_argument("--out", required=True, help="output .safetensors")
    b.add_argument("--size", type=int, default=10_000, help="number of anchors (default: 10000)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_anonymize(sub, swap: bool = False) -> None:
    if swap:
        p = sub.add_parser("swap", help="face swapping: put one person's identity on the faces of images and videos")
        p.add_argument("--source", required=True, metavar="FACE", help="photo of the person whose identity the faces get")
        p.set_defaults(identity="swap", suffix="_swapped", method="fiva", keep=None, only=None, identity_store=None)
    else:
        p = sub.add_parser("anonymize", help="replace the identity of every face in images and videos")
        p.set_defaults(identity="itm", suffix="_anonymized", source=None)
    what = "swapped" if swap else "anonymized"
    p.add_argument("inputs", nargs="+", help="image or video files, folders of them (recursive), or glob patterns (quote them)")
    p.add_argument("-o", "--output", default=None,
                   help=f"output file (one input) or folder (several inputs or a folder); default: beside each input as NAME_{what}.EXT")
    if not swap:
        p.add_argument("--method", default="fiva", choices=["fiva", "blur", "pixelate", "mask"],
                       help="fiva (the generator pipeline), or a classic baseline on the whole face box (default: fiva)")
    p.add_argument("--generator", default="anchor-face", help="registered face generator for the pipeline (default: anchor-face; built in: "
                                                            + ("anchor-face (the source's own face drawn on each target at its own resolution), "
                                                               if swap else "anchor-face (k-Same bank faces drawn at the face's own resolution; --model: a bank file), ") +
                                                            "fiva (the 112 px FIVA network), crop-blur, crop-pixelate, crop-mask; plugins: entry point group fiva.generators)")
    p.add_argument("--model", default=None, help="generator weights .safetensors (default: the shipped bank for anchor-face, fiva-112 for fiva)")
    p.add_argument("--anchors", default=None, help="anchor space .safetensors (default: the shipped one)")
    p.add_argument("--threshold", type=float, default=None, help=f"ITM cosine-distance threshold for 'same person' (default: {DEFAULT_THRESHOLD}, calibrated on LFW pairs)")
    p.add_argument("--margin", type=float, default=0.0, help="Eq. 1 margin m: target |cos| between real and fake identity (default: 0)")
    p.add_argument("--score", type=float, default=0.3,
                   help="face detection score threshold: lower finds more faces (a missed face is a leak), higher fewer false alarms (default: 0.3)")
    p.add_argument("--fallback", default="none" if swap else "pixelate", choices=["blur", "pixelate", "mask", "none"],
                   help="obfuscation for faces the generator cannot serve: too small, in profile, cut by the border, or still "
                        f"matching their original after generation; 'none' generates them anyway (default: {'none' if swap else 'pixelate'})")
    p.add_argument("--min-face", type=int, default=24, help="faces whose box is smaller than this many pixels get the fallback (default: 24)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check each generated face with the independent dlib evaluator too (~0.1 s a face); "
                        "default: on for images, off for videos")
    p.add_argument("--verify-margin", type=float, default=VERIFY_MARGIN,
                   help="photos: a generated face must be this much beyond the --threshold cosine distance from its original by SFace, "
                        f"or it gets the fallback: another photo of the person can be nearer it than this one (default: {VERIFY_MARGIN}; videos: 0)")
    p.add_argument("--codec", default=None, choices=["h264", "h265", "hevc", "vp9", "av1"],
                   help="video codec (default: h264; vp9 for .webm)")
    p.add_argument("--crf", type=int, default=18, help="video quality, lower is better and larger (default: 18)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="copy the input video's container and stream metadata (default: stripped: it can hold GPS positions)")
    if swap:
        _add_common(p)
        return
    p.add_argument("--draw-in-full", action=argparse.BooleanOptionalAction, default=True,
                   help="photos: a face every drawing leaves recognisable is drawn once more with the bank face in full before "
                        "the fallback; --no-draw-in-full gives it the fallback at once (about a third of those drawings look "
                        "twisted or smeared; default: on)")
    p.add_argument("--defense", default="noise", choices=["none", "noise", "fgsm"],
                   help="disrupt reconstruction attacks: uniform noise on a fraction of the face's pixels (black-box) or "
                        "an FGSM step against --attack (white-box) (default: noise, the paper's setting; see BENCHMARKS.md)")
    p.add_argument("--defense-eps", type=float, default=0.15, help="defense amplitude, in grey levels / 255 (default: 0.15, the paper's)")
    p.add_argument("--defense-p", type=float, default=0.0025, help="noise defense: fraction of the face's pixels (default: 0.0025)")
    p.add_argument("--attack", default=None, help="reconstruction attack .safetensors the fgsm defense works against (default: the shipped one whose metadata says it was trained against --generator)")
    p.add_argument("--keep", action="append", metavar="FACE", default=None,
                   help="reference photo (or folder of photos) of a person never to anonymize, e.g. consenting staff; "
                        "repeat for more people: --keep a.jpg --keep b.jpg (default: none)")
    p.add_argument("--only", action="append", metavar="FACE", default=None,
                   help="reference photo (or folder of photos) of a person to anonymize, all others left as they are; repeatable (default: none)")
    p.add_argument("--identity-store", default=None, metavar="PATH",
                   help="keep the ITM's identity pairs in PATH between runs, so a person gets one fake identity across a "
                        "whole dataset. The file holds biometric data (owner-only permissions); delete it with "
                        "'fiva identities purge PATH'. Without this option nothing about identities is written.")
    _add_common(p)


def _add_common(p) -> None:
    p.add_argument("--report", default=None, help="write a JSON run report here: per file, faces by method, fallbacks, errors, time")
    p.add_argument("--seed", type=int, default=0, help="seed for fake-identity sampling (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the inputs); without it they are skipped")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse images larger than N pixels, a guard against decompression bombs; raise it for "
                        f"photos from 200-megapixel phones, e.g. --max-pixels 250000000 (default: {MAX_PIXELS})")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_cluster(p)


def _add_cluster(p) -> None:
    c = p.add_argument_group("on a Ray cluster (needs the [cluster] extra; README: On a cluster)")
    c.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="spread the files over Ray workers: 'local' starts Ray on this machine, an address (HOST:PORT, or "
                        "'auto') joins a cluster started with 'ray start'; every node must see the inputs and the output "
                        "folder at the same paths (default: off, one process)")
    c.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes, each loading the models once (default: the CPUs of this machine (local) or of "
                        "the cluster, divided by --worker-threads)")
    c.add_argument("--worker-threads", type=int, default=None, metavar="T", help="CPU threads per worker (default: 1)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="the paper's privacy and consistency tables on LFW and videos (needs the [eval] extra: matplotlib)")
    p.add_argument("--lfw", default="../shared/data/lfw", help="LFW folder with images/, pairs.txt, people.txt (default: ../shared/data/lfw)")
    p.add_argument("--videos", default="../shared/data/videos", help="folder of videos for temporal consistency; '' for none (default: ../shared/data/videos)")
    p.add_argument("-o", "--out", default="runs/evaluate", help="report folder: report.md, report.json, plots (default: runs/evaluate)")
    p.add_argument("--probes", type=int, default=300, help="probe faces of the evaluation identities (default: 300)")
    p.add_argument("--frames", type=int, default=10, help="frames per video for temporal consistency, N of Eq. 7 (default: 10)")
    p.add_argument("--far", type=float, default=0.001, help="false acceptance rate the thresholds are calibrated at (default: 0.001)")
    p.add_argument("--limit", type=int, default=None,
                   help="quick run: N probes, a gallery of 4N identities, N videos, 10N calibration pairs (default: full run)")
    p.add_argument("--generator", default="anchor-face", choices=["anchor-face", "fiva"],
                   help="what the FIVA rows, RA, the defense sweep and the fake detection measure: the anchor-face renderer "
                        "`fiva anonymize` draws with, or the 112 px network (default: anchor-face)")
    p.add_argument("--model", default=None, help="generator weights .safetensors for --generator fiva (default: the shipped fiva-112)")
    p.add_argument("--anchors", default=None, help="anchor space .safetensors (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="seed for probe choice and identity sampling (default: 0)")
    p.add_argument("--workers", type=int, default=None, help="processes for embedding the LFW originals (default: all cores)")
    p.add_argument("--attack", default=None, help="reconstruction attack R .safetensors (fiva train attack) for the RA column (default: none)")
    p.add_argument("--fake-detector", default=None, help="fake detector .safetensors measured in the fake-detection section beside R "
                   "(default: the shipped one `fiva detect-fake` uses; '' for none)")
    p.add_argument("--defense-probes", type=int, default=100, help="probes for the defense sweep (Table 3, Figure 3; with --attack) (default: 100)")
    p.add_argument("--swap-pairs", type=int, default=100, help="face-swap pairs for the Table 4 section; 0 for none (default: 100)")
    p.add_argument("--benchmarks", default=None, help="also replace the evaluation section of this Markdown file (e.g. BENCHMARKS.md)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_identities(sub) -> None:
    p = sub.add_parser("identities", help="manage an identity store (--identity-store)")
    isub = p.add_subparsers(dest="what", required=True)
    purge = isub.add_parser("purge", help="overwrite and delete an identity store (biometric data)")
    purge.add_argument("path", help="the store file")


def _add_detect_fake(sub) -> None:
    p = sub.add_parser("detect-fake", help="score faces as anonymized by fiva or real, with the shipped fake detector (or the "
                                           "reconstruction attack R, paper Section 3.6)")
    p.add_argument("inputs", nargs="+", help="images or videos")
    p.add_argument("--detector", default=None, help="fake detector .safetensors (fiva train detector) (default: the shipped one, "
                                                    "trained against the default anchor-face outputs and blur)")
    p.add_argument("--attack", default=None, help="score with a reconstruction attack R .safetensors instead of the detector (its "
                                                  "identity or residual score; measured at chance against the anchor-face default)")
    p.add_argument("--threshold", type=float, default=None,
                   help="score above which a face is called fake (default: the one stored with the model)")
    p.add_argument("--frames", type=int, default=10, help="frames looked at per video (default: 10)")
    p.add_argument("--score", choices=("detector", "identity", "residual"), default=None,
                   help="fake score: the detector's probability; with --attack, identity distance between X and R(X) (the "
                        "paper's) or how much R changes the face (residual) (default: detector; with --attack the one stored with R)")
    p.add_argument("--min-face", type=int, default=24, help="faces smaller than this many pixels get a score but no verdict "
                   "(fake: null): fiva anonymize never draws them, and upscaled they look manipulated to the detector (default: 24)")
    p.add_argument("--json", default=None, help="also write the per-face results to this JSON file")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page to anonymize photos and videos, review them and choose who stays "
                                     "(needs the [web] extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback lets other machines "
                                                      "reach the page and its uploads (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: 0 = a free one, printed)")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest accepted upload in MB (default: 500)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse photos larger than N pixels, as fiva anonymize does (default: {MAX_PIXELS})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def cmd_serve(a) -> int:
    from .web.server import ServeConfig, serve

    return serve(ServeConfig(host=a.host, port=a.port, max_upload_mb=a.max_upload_mb, max_pixels=a.max_pixels,
                             device=a.device))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fiva", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_anonymize(sub)
    _add_anonymize(sub, swap=True)
    _add_train(sub)
    _add_anchors(sub)
    _add_evaluate(sub)
    _add_identities(sub)
    _add_detect_fake(sub)
    _add_serve(sub)
    return ap


def cmd_train(a) -> int:
    if a.what == "detector":
        import torch

        from .train.detector import DetectorTrainConfig, train_detector

        torch.set_num_threads(min(torch.get_num_threads(), 4))
        print(train_detector(DetectorTrainConfig(pairs=a.pairs, out=a.out, steps=a.steps, batch=a.batch, lr=a.lr, blur_share=a.blur_share,
                                                 val_share=a.val_share, threshold_quantile=a.threshold_quantile,
                                                 time_limit=a.time_limit, seed=a.seed, init=a.init)))
        return 0
    if a.what == "refiner":
        from .train.refiner import RefinerTrainConfig, train_refiner

        print(train_refiner(RefinerTrainConfig(pairs=a.pairs, out=a.out, steps=a.steps, batch=a.batch, w_low=a.w_low, w_full=a.w_full,
                                               w_id=a.w_id, coarse=a.coarse, d_scale=a.d_scale, time_limit=a.time_limit, snapshot_every=a.snapshot_every,
                                               device=a.device, seed=a.seed)))
        return 0
    if a.what == "pairs":
        from .train.pairs import PairsConfig, render_pairs

        print(render_pairs(PairsConfig(data=a.data, out=a.out, max_pairs=a.max_pairs, time_limit=a.time_limit, generator=a.generator,
                                       seed=a.seed, progress=not a.no_progress)))
        return 0
    if a.what == "attack":
        from .train.attack import AttackConfig, train_attack

        if not (a.data or a.pairs):
            raise SystemExit("fiva train attack: give --data (a generator in the loop) or --pairs (stored pairs)")

        print(train_attack(AttackConfig(data=a.data, out=a.out, generator=a.generator, model=a.model, pairs=a.pairs, real_share=a.real_share, lr=a.lr,
                                        steps=a.steps, batch=a.batch,
                                        resume=a.resume, sample_every=a.sample_every, save_every=a.save_every,
                                        time_limit=a.time_limit, device=a.device, seed=a.seed, progress=not a.no_progress)))
        return 0
    from .train.generator import TrainConfig, train

    cfg = TrainConfig(data=a.data, val_data=a.val_data, out=a.out, model=a.model, steps=a.steps, batch=a.batch, lr=a.lr, lr_d=a.lr_d,
                      resume=a.resume, val_every=a.val_every, sample_every=a.sample_every, save_every=a.save_every,
                      time_limit=a.time_limit, device=a.device, seed=a.seed, progress=not a.no_progress,
                      keep_generators=a.keep_generators, ema=a.ema, free_inner=a.free_inner,
                      prior_faces=a.prior_faces, prior_seed=a.prior_seed,
                      **{n: getattr(a, n) for n, _, _ in LOSS_FLAGS if getattr(a, n) is not None})
    path = train(cfg)
    print(path)
    return 0


def cmd_anchors(a) -> int:
    from .anonymize.anchors import build_from_data

    space = build_from_data(a.data, size=a.size, seed=a.seed)
    space.save(a.out)
    print(f"{a.out}: {len(space.anchors)} anchors")
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate.report import markdown_tables
    from .evaluate.run import EvalConfig, evaluate

    cfg = EvalConfig(lfw=a.lfw, videos=a.videos, out=a.out, probes=a.probes, frames=a.frames, far=a.far, limit=a.limit,
                     generator=a.generator, model=a.model, anchors=a.anchors, seed=a.seed, workers=a.workers, benchmarks=a.benchmarks, swap_pairs=a.swap_pairs, attack=a.attack, defense_probes=a.defense_probes, fake_detector=a.fake_detector,
                     progress=not a.no_progress)
    result = evaluate(cfg)
    print(markdown_tables(result))
    print(f"report: {cfg.out}/report.md")
    return 0


def cmd_identities(a) -> int:
    from .anonymize.itm import purge_store

    purge_store(a.path)
    print(f"{a.path}: purged")
    return 0


def cmd_detect_fake(a) -> int:
    import json

    from .evaluate.fakes import detect_fakes
    if a.score in ("identity", "residual") and not a.attack:
        from .weights import DEFAULT_ATTACK

        a.attack = str(DEFAULT_ATTACK)
    results, errors = detect_fakes(a.inputs, a.attack, a.threshold, a.frames, a.score, a.detector, a.min_face)
    for msg in errors:
        print(f"fiva: error: {msg}", file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 1 if errors else 0


def cmd_anonymize(a) -> int:
    if a.ray:
        from .anonymize.cluster import ClusterConfig, run_cluster

        return run_cluster(a, ClusterConfig(address=a.ray, workers=a.workers, threads=a.worker_threads or 1))
    if a.workers is not None or a.worker_threads is not None:
        raise ValueError("--workers and --worker-threads need --ray")
    from .anonymize.runner import run_anonymize

    return run_anonymize(a)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(levelname)s %(message)s")
    handlers = {"train": cmd_train, "anchors": cmd_anchors, "anonymize": cmd_anonymize, "evaluate": cmd_evaluate, "identities": cmd_identities, "swap": cmd_anonymize, "detect-fake": cmd_detect_fake,
                "serve": cmd_serve}
    try:
        return handlers[a.command](a)
    except (ValueError, FileNotFoundError) as e:  # bad input or settings: one line, no traceback
        print(f"fiva: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
