#!/usr/bin/python3
"""Regenerate test/fixtures/lorat-crop/reference.json with the official LoRAT code and real PyTorch.

Run from the project root, with an extracted snapshot of LitingLin/LoRAT (the spec's commit 5260744):
    git --git-dir=<mirror> archive HEAD trackit | tar x -C /tmp/lorat-src
    LORAT_DIR=/tmp/lorat-src /usr/bin/python3 scripts/make-lorat-crop-fixtures.py
Needs torch, torchvision and numpy. Only the official modules named below are imported (their heavy
parent packages are replaced by empty ones, and timm's one helper by a stand-in), so nothing here
re-implements what the tests check: crop params, crops, adjusted params, the template foreground
mask, the search-region provider and the score-map post-processing are the official functions'
own outputs. The TypeScript tests only read the JSON written here.
"""
import base64
import importlib
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", "lorat-crop", "reference.json")
LORAT = os.environ.get("LORAT_DIR", "/tmp/lorat-src")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def stub_packages(dotted):
    """Empty stand-ins for `dotted` and its parents, so importing a leaf module skips heavy __init__s."""
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [os.path.join(LORAT, *parts[:i])]
            sys.modules[name] = m


def load(module, light_parent=None):
    if light_parent is not None:
        stub_packages(light_parent.rsplit(".", 1)[0])
        importlib.import_module(light_parent)
    return importlib.import_module(module)


sys.path.insert(0, LORAT)
timm_layers = types.ModuleType("timm.layers")
timm_layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
sys.modules["timm"] = types.ModuleType("timm")
sys.modules["timm.layers"] = timm_layers

cropping = load("trackit.core.utils.siamfc_cropping")
EVAL = "trackit.runners.evaluation"
TE = EVAL + ".distributed.tracker_evaluator"
provider_mod = load(EVAL + ".common.siamfc_search_region_cropping_params_provider.simple",
                    EVAL + ".common.siamfc_search_region_cropping_params_provider")
stub_packages(TE + ".default.pipelines.utils")
mask_gen = load(TE + ".default.pipelines.utils.bbox_mask_gen")
post_mod = load(TE + ".components.post_process.box_with_score_map", TE + ".components.post_process")
image_util = load("trackit.core.operator.numpy.bbox.utility.image")

rng = np.random.default_rng(20240611)
normalize = T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, inplace=True)


def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def params4(p):
    """(2, 2) [[sx, sy], [tx, ty]] → [sx, sy, tx, ty] as float64 numbers; None where not finite (no overlap)."""
    p = np.asarray(p, dtype=np.float64)
    v = [float(p[0, 0]), float(p[0, 1]), float(p[1, 0]), float(p[1, 1])]
    return v if all(np.isfinite(v)) else None


def random_image(w, h):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def official_crop(img_hwc, params, out_size, mean=None):
    """The eval transform's template crop / the pipeline's search crop, then /255 and Normalize."""
    image = torch.from_numpy(img_hwc).permute(2, 0, 1).to(torch.float32)
    crop, image_mean, adjusted = cropping.apply_siamfc_cropping(
        image, np.array(out_size), params, "bilinear", False, mean)
    crop = crop / 255.
    normalize(crop)
    return crop, image_mean, adjusted


def crop_cases():
    """Small images, so the whole normalised crop fits in the fixture."""
    cases = []
    specs = [  # (w, h, box, area factor, out size, min object size)
        (40, 30, (10.3, 8.7, 22.9, 17.2), 2.0, (16, 16), None),
        (40, 30, (10.3, 8.7, 22.9, 17.2), 4.0, (24, 24), 10),
        (33, 47, (-6.5, 30.25, 9.75, 52.0), 4.0, (20, 20), 10),   # partly outside, bottom-left
        (50, 20, (44.0, -3.0, 61.5, 6.0), 2.0, (18, 12), None),   # partly outside, top-right
        (37, 29, (17.2, 13.9, 17.9, 14.3), 4.0, (16, 16), 10),    # tiny box: clamped to 10 px
        (37, 29, (1.0, 2.0, 36.0, 27.5), 2.0, (14, 14), None),    # huge box: strong downscale
        (23, 31, (4.4, 5.1, 9.8, 11.7), 4.0, (32, 32), 10),       # upscale
    ]
    for w, h, box, f, out, min_size in specs:
        img = random_image(w, h)
        box = np.array(box, dtype=np.float64)
        if min_size is None:
            params = cropping.get_siamfc_cropping_params(box, f, np.array(out))
        else:
            provider = provider_mod.SiamFCCroppingParameterSimpleProvider(f, min_size)
            provider.initialize(box)
            params = provider.get(np.array(out))
        crop, mean, adjusted = official_crop(img, params, out)
        cases.append({
            "width": w, "height": h, "pixels": b64(img, np.uint8), "box": box.tolist(), "areaFactor": f,
            "outSize": list(out), "minObjectSize": min_size, "params": params4(params),
            "mean": [float(v) for v in mean], "adjusted": params4(adjusted), "crop": b64(crop.numpy(), "<f4"),
        })
    return cases


def interpolate_cases():
    cases = []
    for (iw, ih, ow, oh) in [(5, 3, 7, 4), (9, 8, 4, 3), (6, 6, 6, 6), (3, 7, 11, 2), (13, 5, 5, 13)]:
        img = random_image(iw, ih)
        t = torch.from_numpy(img).permute(2, 0, 1).to(torch.float32).unsqueeze(0)
        out = F.interpolate(t, (oh, ow), mode="bilinear", align_corners=False)
        cases.append({"inSize": [iw, ih], "outSize": [ow, oh], "pixels": b64(img, np.uint8),
                      "output": b64(out.squeeze(0).numpy(), "<f4")})
    return cases


def geometry_cases():
    """Requested and adjusted params (and the template mask) on real frame sizes; the pixels don't matter."""
    cases = []
    for w, h in [(854, 480), (640, 360), (333, 517)]:
        image = torch.zeros((1, h, w), dtype=torch.float32)
        for k in range(12):
            bw, bh = rng.uniform(0.5, 0.6 * w), rng.uniform(0.5, 0.6 * h)
            cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)
            if k < 6:  # template boxes stay on the frame, as a user's initial box does
                cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
            box = np.array((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), dtype=np.float64)
            entry = {"imageSize": [w, h], "box": box.tolist()}
            if k < 6:
                tp = cropping.get_siamfc_cropping_params(box, 2.0, np.array((112, 112)))
                _, _, tadj = cropping.apply_siamfc_cropping(image, np.array((112, 112)), tp, "bilinear", False)
                fg = mask_gen.get_foreground_bounding_box(box, tadj, (112 / 8, 112 / 8))
                image_util.bbox_clip_to_image_boundary_(fg, np.array((8, 8)))
                mask = torch.zeros((8, 8), dtype=torch.long)
                mask[fg[1]:fg[3], fg[0]:fg[2]] = 1
                entry.update({"template": params4(tp), "templateAdjusted": params4(tadj),
                              "mask": mask.flatten().tolist()})
            provider = provider_mod.SiamFCCroppingParameterSimpleProvider(4.0, 10)
            provider.initialize(box)
            sp = provider.get(np.array((224, 224)))
            _, _, sadj = cropping.apply_siamfc_cropping(image, np.array((224, 224)), sp, "bilinear", False,
                                                        torch.zeros(1))
            entry.update({"search": params4(sp), "searchAdjusted": params4(sadj)})
            cases.append(entry)
    return cases


def official_index(post, logits):
    """The cell box_with_score_map picks (it returns only the box and score): the same expression and torch.max."""
    s = logits.sigmoid().view(1, -1)
    return int(torch.max(s * (1 - 0.45) + post._window.view(1, -1) * 0.45, 1)[1])


def decode_cases():
    """box_with_score_map post-processing (window 0.45) and the pipeline's mapping back, then the provider update."""
    post = post_mod.PostProcessing_BoxWithScoreMap(torch.device("cpu"), (16, 16), (224, 224), 0.45)
    post.start()
    cases = []
    for k in range(8):
        w, h = [(854, 480), (640, 360)][k % 2]
        logits = torch.from_numpy(rng.normal(-4, 2, size=(16, 16)).astype(np.float32))
        if k % 4 == 1:  # near ties around the centre: the window (and its float32 asymmetry) decides
            logits[7:9, 7:9] = 3.0
        if k % 4 == 2:  # a slightly stronger peak at the border
            logits[0, 3], logits[8, 8] = 2.2, 2.0
        xy = rng.uniform(0, 1, size=(16, 16, 4)).astype(np.float32)
        boxes = torch.from_numpy(np.concatenate((np.minimum(xy[..., :2], xy[..., 2:]), np.maximum(xy[..., :2], xy[..., 2:])), -1))
        if k == 3:  # the chosen box far outside the crop's image content
            boxes[...] = torch.tensor((0.0, 0.0, 0.01, 0.01))
        out = post({"score_map": logits.unsqueeze(0), "boxes": boxes.unsqueeze(0)})
        params = np.array(((rng.uniform(0.3, 3.0),) * 2, (rng.uniform(-300, 300), rng.uniform(-200, 200))), dtype=np.float32)
        if k == 3:
            params = np.array(((1.0, 1.0), (400.0, 300.0)), dtype=np.float32)  # image sits at the crop's bottom-right
        params64 = params.astype(np.float64)
        mapped = cropping.apply_siamfc_cropping_to_boxes(out["box"].to(torch.float64).numpy(),
                                                         cropping.reverse_siamfc_cropping_params(params64[None]))[0]
        image_util.bbox_clip_to_image_boundary_(mapped, np.array((w, h), dtype=np.int32))
        provider = provider_mod.SiamFCCroppingParameterSimpleProvider(4.0, 10)
        start = np.array((100.0, 100.0, 150.0, 160.0))
        provider.initialize(start)
        provider.update(float(out["confidence"][0]), mapped.copy(), np.array((w, h), dtype=np.int32))
        cases.append({
            "imageSize": [w, h], "logits": b64(logits.numpy(), "<f4"), "boxes": b64(boxes.numpy(), "<f4"),
            "params": params4(params), "index": official_index(post, logits),
            "score": float(out["confidence"][0]), "cropBox": [float(v) for v in out["box"][0]], "box": mapped.tolist(),
            "stateBefore": start.tolist(), "stateAfter": provider.cached_bbox.tolist(),
        })
    return cases


def main():
    data = {
        "made_by": "scripts/make-lorat-crop-fixtures.py: official LitingLin/LoRAT functions, torch " + torch.__version__,
        "crops": crop_cases(),
        "interpolate": interpolate_cases(),
        "geometry": geometry_cases(),
        "decode": decode_cases(),
        "hann16": [float(v) for v in torch.hann_window(16, periodic=False)],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
