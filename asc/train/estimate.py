"""How long a run will take on this machine today: a few timed steps of the recipe's model, scaled
by the recipe's epochs, steps, validation and angle passes (`asc train --estimate`).

Machines here differ in speed from day to day by a factor of two or more, so a fixed table would be
wrong half the time; timing two steps of the real model costs a few seconds and follows the day.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

#: data loading, augmentation and bookkeeping on top of the bare training step (measured: 15-25 %)
_TRAIN_OVERHEAD = 1.2
#: interpreter start, imports, cache and model set-up of one `asc train` / `asc evaluate` process
_STARTUP_S = 4.0
#: report figures and files of `asc evaluate`
_REPORT_S = 4.0


def _split_sizes(recipe: Mapping) -> dict[str, int]:
    from asc.features.cache import read_manifest
    from asc.tasks import SceneTask

    data = recipe["data"]
    clips = read_manifest(SceneTask.cache_dir(recipe, "recipe"))["clips"]
    return {split: sum(1 for c in clips if c.get("split") == split)
            for split in (data["train_split"], data["eval_split"])}


def estimate(recipe: Mapping, device: str = "cpu") -> dict[str, float]:
    """Seconds expected for `asc train` and for `asc evaluate` of this recipe (DCASE runs)."""
    import torch
    import torch.nn.functional as F

    from asc.data.description import description_of
    from asc.eval.inference import infer
    from asc.features.cache import read_manifest
    from asc.runs import build_model
    from asc.train.data import clip_augment

    tr = recipe["train"]
    sizes = _split_sizes(recipe)
    n_train, n_eval = sizes[recipe["data"]["train_split"]], sizes[recipe["data"]["eval_split"]]
    manifest = read_manifest(recipe["data"]["cache_dir"])
    c, f, t = (int(v) for v in manifest["shape"])
    classes = len(description_of(manifest["dataset"], recipe["data"]["cache_dir"]).classes)
    aug = clip_augment(recipe["augment"], t)
    crop = min(aug["crop_frames"] or t, t)
    batch = min(tr["batch_size"], max(n_train, 2))
    model = build_model({"name": recipe["model"]["name"], "num_classes": classes, "in_channels": c,
                         "norm": recipe["norm"], "params": recipe["model"]["params"]}).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, c, f, crop, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    step_s = []
    for _ in range(2):  # the first step pays for warm-up
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
    probe = torch.randn(min(tr["eval_batch_size"], 16), c, f, t, device=device)
    infer(model, [probe[:2]], device=device)
    t0 = time.perf_counter()
    infer(model, [probe], device=device)
    clip_s = (time.perf_counter() - t0) / len(probe)

    epochs = tr["epochs"]
    steps = max(1, n_train // batch)
    if tr["max_steps_per_epoch"]:
        steps = min(steps, tr["max_steps_per_epoch"])
    val_passes = sum(1 for e in range(1, epochs + 1) if e % tr["eval_every"] == 0 or e == epochs)
    angle_passes = sum(1 for e in range(1, epochs + 1)
                       if tr["angles_every"] and (e % tr["angles_every"] == 0 or e == epochs))
    n_val = min(n_eval, tr["val_clips"] or n_eval)
    n_angle = min(n_train, tr["angle_clips"] or n_train)
    train = (_STARTUP_S + epochs * steps * step_s[-1] * _TRAIN_OVERHEAD
             + (val_passes * n_val + angle_passes * n_angle) * clip_s)
    evaluate = _STARTUP_S + _REPORT_S + (n_eval + n_angle) * clip_s
    return {"train_s": math.ceil(train), "evaluate_s": math.ceil(evaluate), "step_s": step_s[-1],
            "clip_s": clip_s}
