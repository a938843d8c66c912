"""Check and time the GPU path in one run; writes gpu-check.json and gpu-check.md into --out.

    bash scripts/gpu_check.sh [--out DIR]              # on a CUDA machine (DIR: $OUT, else ./gpu-check)
    bash scripts/gpu_check.sh --rehearse --out /tmp/gc   # every step on the CPU at tiny sizes

Correctness (each check passes or fails; the exit status is 1 when one fails):
  l2bn      asc.nn.L2BatchNorm2d on the device, eager and under torch.compile, contiguous and
            channels_last, float32 and bf16: output, dx, dweight, dbias, running statistics (and the
            eval output) against a float64 CPU transcription of the formula
  amp_step  one bf16-autocast SGD step of fcnn, fsfcnn and resnet17 (small width) with BN and with L2BN:
            finite loss, gradients and weights, and a loss near the float32 loss of the same weights
  sync      1 process, NCCL, init_method tcp://127.0.0.1: convert_sync_norm layers with their
            all-reduces forced on (world size 1 would skip them), alone and in an FCNN under DDP, equal
            to the unsynchronized layers
  extract   `asc extract --device cuda` against `asc extract --device cpu` on the evaluate split of
            `asc data synth --preset tiny --duration 2` (skipped when soundfile cannot be imported)
Timing (each a ratio of two things measured in this run, interleaved):
  l2bn_layer          L2BN / cuDNN BatchNorm2d forward+backward on scripts/bench_l2bn.py's shapes,
                      eager and torch.compile
  train_step          full-width FCNN and ResNet-17 training steps (batch 32, 128 x 400), BN vs L2BN,
                      float32 and bf16 autocast, channels_last, samples/s
  extract_throughput  LogMelExtractor on 10-s clips: batches of 32 on the GPU (host arrays in, float16
                      arrays out, as `asc extract --device cuda`) against one clip at a time on one CPU
                      thread (what each `asc extract` worker does)

Without CUDA (and without --rehearse) it prints one line and exits 0. --rehearse runs every step on
the CPU at tiny sizes (native CPU kernels off, so the CPU runs the torch-op code CUDA runs; compile
with the aot_eager backend; gloo instead of NCCL); its timings test the script and measure nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
FEATURES = ROOT / "features" / "logmel128_deltas.yaml"
NO_CUDA = "no CUDA device: nothing to check"
DCASE_MODELS = ("fcnn", "fsfcnn", "resnet17")
TIMED_MODELS = ("fcnn", "resnet17")

# goals until measured on a GPU (BENCHMARKS.md, "GPU check")
TARGETS = {
    "l2bn_eager_vs_bn": ("eager L2BN / cuDNN BN, worst shape", "<=", 1.10),
    "l2bn_compiled_vs_bn": ("compiled L2BN / compiled BN, worst shape", "<=", 1.00),
    "train_step_l2bn_vs_bn": ("training step time L2BN / BN, worst model and precision", "<=", 1.03),
    "extract_gpu_vs_2core_cpu": ("GPU extraction / 2-core CPU extraction (clips/s)", ">=", 10.0),
}


class CheckFailed(Exception):
    """A correctness check found a wrong result (not a crash of the script)."""


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {msg}", flush=True)


# ----------------------------------------------------------------------------- settings


def sizes(rehearse: bool) -> dict:
    """Every size the run uses: bounded so a GPU run ends within minutes, tiny for the rehearsal."""
    if rehearse:
        return dict(
            l2bn_shapes=[(6, 4, 10, 9), (5, 3, 7, 11)], l2bn_compiled_shapes=[(6, 4, 10, 9)],
            amp_width=0.06, amp_input=(4, 3, 32, 40),
            sync_input=(4, 3, 32, 40), sync_width=0.06,
            bench_shapes=["4x8x16x16", "8x8x8x8", "4x16x8x6"], bench_reps=2, bench_warmup=1,
            train_width=0.06, train_batch=4, train_input=(3, 32, 40), train_reps=2, train_warmup=1,
            clip_s=2.0, gpu_batch=4, gpu_batches=2, cpu_clips=4,
            compile_backend="aot_eager", extract_workers=1,
        )
    return dict(
        l2bn_shapes=[(8, 16, 24, 20), (5, 3, 33, 17)], l2bn_compiled_shapes=[(8, 16, 24, 20)],
        amp_width=0.25, amp_input=(8, 3, 128, 200),
        sync_input=(8, 3, 64, 80), sync_width=0.125,
        bench_shapes=None, bench_reps=20, bench_warmup=3,
        train_width=1.0, train_batch=32, train_input=(3, 128, 400), train_reps=10, train_warmup=3,
        clip_s=10.0, gpu_batch=32, gpu_batches=10, cpu_clips=48,
        compile_backend="inductor", extract_workers=4,
    )


# ----------------------------------------------------------------------------- helpers


def scaled_err(got, want) -> float:
    """max |got - want| / max(1, max |want|), in float64 on the CPU."""
    got = got.detach().double().cpu()
    want = want.detach().double().cpu()
    if got.shape != want.shape:
        raise CheckFailed(f"shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    if want.numel() == 0:
        return 0.0
    if not bool(got.isfinite().all()):
        return math.inf
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def all_finite(tensors) -> bool:
    return all(t is not None and bool(t.detach().isfinite().all()) for t in tensors)


def child_env(rehearse: bool) -> dict:
    """Environment for the subprocesses: the repo importable, native CPU kernels off in a rehearsal."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        parts.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    if rehearse:
        env["ASC_NATIVE"] = "0"
    return env


def tail(text: str, n: int = 1500) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def run_asc(args: list[str], env: dict, timeout: float) -> str:
    proc = subprocess.run([sys.executable, "-m", "asc", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise CheckFailed(f"asc {' '.join(args[:1])} exited {proc.returncode}: {tail(proc.stderr, 800)}")
    return proc.stdout


def soundfile_state() -> tuple[bool, str]:
    """Whether soundfile imports here, and where it came from (the wrapper says if it installed wheels)."""
    told = os.environ.get("GPU_CHECK_SOUNDFILE", "")
    try:
        import soundfile  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when libsndfile cannot be loaded
        return False, told if told.startswith("missing") else f"missing ({type(exc).__name__}: {exc})"
    return True, told or "installed"


def environment(rehearse: bool, device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
    with contextlib.suppress(Exception):
        import torchaudio

        env["torchaudio"] = torchaudio.__version__
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["capability"] = f"{props.major}.{props.minor}"
    for key, cmd in (("git_commit", ["rev-parse", "HEAD"]), ("git_changes", ["status", "--porcelain"])):
        with contextlib.suppress(Exception):
            out = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                env[key] = out.stdout.strip() if key == "git_commit" else bool(out.stdout.strip())
    if rehearse:
        env["note"] = ("rehearsal on the CPU: native CPU kernels off (the torch-op code CUDA runs), "
                       "torch.compile with the aot_eager backend, gloo instead of NCCL")
    return env


# ----------------------------------------------------------------------------- correctness: L2BN


def l2bn_reference(x, weight, bias, mean=None, var=None, eps=1e-5):
    """float64: x̂ = sqrt(n) x / max(‖x‖, l2_eps) per sample over C·H·W, then batch norm (batch
    statistics, or the given running ones)."""
    import torch

    from asc.nn import L2_EPS

    x = x.double()
    n = x[0].numel()
    norms = torch.sqrt((x.reshape(len(x), -1) ** 2).sum(1)).clamp_min(L2_EPS)
    xh = math.sqrt(n) * x / norms.reshape(-1, 1, 1, 1)
    view = (1, -1, 1, 1)
    if mean is None:
        mean = xh.mean((0, 2, 3))
        var = ((xh - mean.reshape(view)) ** 2).mean((0, 2, 3))
    y = (xh - mean.reshape(view)) / torch.sqrt(var.reshape(view) + eps)
    return y * weight.double().reshape(view) + bias.double().reshape(view), xh


def l2bn_case(shape, device, *, dtype_name="float32", channels_last=False, compile_backend=None) -> dict:
    import torch

    from asc.nn import L2BatchNorm2d

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    c = shape[1]
    momentum = 0.3
    x64 = torch.randn(shape, dtype=torch.float64) * 3 + 2
    g64 = torch.randn(shape, dtype=torch.float64)
    layer = L2BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    w64, b64 = layer.weight.detach().double(), layer.bias.detach().double()
    layer.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x64.to(dtype).to(device).contiguous(memory_format=fmt).requires_grad_(True)
    g = g64.to(dtype).to(device).contiguous(memory_format=fmt)
    mod = layer if compile_backend is None else torch.compile(layer, backend=compile_backend, dynamic=False)
    y = mod(x)
    y.backward(g)

    # the reference sees the input the layer saw (after rounding to its dtype)
    xr = x.detach().double().cpu().requires_grad_(True)
    wr, br = w64.clone().requires_grad_(True), b64.clone().requires_grad_(True)
    yr, xh = l2bn_reference(xr, wr, br)
    yr.backward(g.detach().double().cpu())
    count = shape[0] * shape[2] * shape[3]
    mean_b = xh.detach().mean((0, 2, 3))
    var_b = xh.detach().var((0, 2, 3), unbiased=False) * count / (count - 1)
    want_rm = momentum * mean_b
    want_rv = (1 - momentum) + momentum * var_b
    errs = {
        "y": scaled_err(y, yr),
        "dx": scaled_err(x.grad, xr.grad),
        "dweight": scaled_err(layer.weight.grad, wr.grad),
        "dbias": scaled_err(layer.bias.grad, br.grad),
        "running_mean": scaled_err(layer.running_mean, want_rm),
        "running_var": scaled_err(layer.running_var, want_rv),
    }
    if compile_backend is None:  # eval: the same l2 step, then the running statistics
        layer.eval()
        with torch.no_grad():
            ye = layer(x.detach())
        ref_e, _ = l2bn_reference(x.detach().double().cpu(), w64, b64, layer.running_mean.double().cpu(),
                                  layer.running_var.double().cpu())
        errs["y_eval"] = scaled_err(ye, ref_e)
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    gtol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3
    limits = {k: (tol if k in ("y", "y_eval", "running_mean", "running_var") else gtol) for k in errs}
    name = (f"{'compiled' if compile_backend else 'eager'} {'x'.join(map(str, shape))} {dtype_name}"
            f"{' channels_last' if channels_last else ''}")
    ok = all(errs[k] <= limits[k] for k in errs) and y.dtype == dtype
    return {"case": name, "ok": ok, "errors": {k: float(f"{v:.3g}") for k, v in errs.items()},
            "limits": limits, "output_dtype": str(y.dtype).replace("torch.", "")}


def check_l2bn(device: str, sz: dict) -> dict:
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the backward's bmm must not round to TF32 here
    try:
        cases = []
        for shape in sz["l2bn_shapes"]:
            cases.append(l2bn_case(shape, device))
        cases.append(l2bn_case(sz["l2bn_shapes"][0], device, channels_last=True))
        cases.append(l2bn_case(sz["l2bn_shapes"][0], device, dtype_name="bfloat16"))
        torch._dynamo.reset()
        for shape in sz["l2bn_compiled_shapes"]:
            for cl in (False, True):
                cases.append(l2bn_case(shape, device, channels_last=cl,
                                       compile_backend=sz["compile_backend"]))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    bad = [c["case"] for c in cases if not c["ok"]]
    worst = {dtype: max(max(c["errors"].values()) for c in cases if c["case"].split()[2] == dtype)
             for dtype in ("float32", "bfloat16")}
    return {"status": "failed" if bad else "passed", "cases": cases, "failed_cases": bad,
            "summary": f"{len(cases) - len(bad)}/{len(cases)} cases within tolerance; worst scaled error "
                       f"{worst['float32']:.2g} in float32, {worst['bfloat16']:.2g} in bf16"}


# ----------------------------------------------------------------------------- correctness: bf16 step


def check_amp_step(device: str, sz: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from asc.models import create_model

    rows = []
    shape = sz["amp_input"]
    for name in DCASE_MODELS:
        for norm in ("bn", "l2bn"):
            torch.manual_seed(0)
            kw = {} if name == "resnet17" else {"dropout": 0.0}  # the same function in both precisions
            model = create_model(name, norm=norm, width_mult=sz["amp_width"], **kw).to(device).train()
            x = (torch.randn(shape) * 2 + 0.5).to(device)
            y = torch.randint(0, 10, (shape[0],)).to(device)
            if device == "cuda":
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            state = copy.deepcopy(model.state_dict())
            with torch.no_grad():
                loss32 = float(F.cross_entropy(model(x).float(), y))
            model.load_state_dict(state)  # the float32 pass moved the running statistics
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            params = [p for p in model.parameters() if p.requires_grad]
            grads = [p.grad for p in params]
            missing = sum(g is None for g in grads)
            grads_ok = missing == 0 and all_finite(grads)
            opt.step()
            weights_ok = all_finite(params)
            buffers_ok = all_finite([b for b in model.buffers() if b.is_floating_point()])
            loss_val = float(loss.detach())
            diff = abs(loss_val - loss32)
            close = diff <= 0.05 + 0.05 * abs(loss32)
            ok = math.isfinite(loss_val) and grads_ok and weights_ok and buffers_ok and close
            rows.append({"model": name, "norm": norm, "ok": ok, "loss_bf16": round(loss_val, 5),
                         "loss_fp32": round(loss32, 5), "grads_finite": grads_ok, "grads_missing": missing,
                         "weights_finite": weights_ok, "buffers_finite": buffers_ok,
                         "logits_dtype": str(logits.dtype).replace("torch.", ""),
                         "grad_norm": round(float(torch.linalg.vector_norm(
                             torch.stack([g.float().norm() for g in grads if g is not None]))), 5)})
            del model, opt, logits, loss
    bad = [f"{r['model']}/{r['norm']}" for r in rows if not r["ok"]]
    return {"status": "failed" if bad else "passed", "rows": rows, "failed_cases": bad,
            "width_mult": sz["amp_width"], "input": list(shape),
            "summary": f"{len(rows) - len(bad)}/{len(rows)} model/norm steps finite and near float32"}


# ----------------------------------------------------------------------------- correctness: sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync_worker(result_path: str, rehearse: bool) -> int:
    """In its own process: a 1-process group, synchronized layers against unsynchronized ones."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from asc.models import create_model
    from asc.nn import SyncBatchNorm, convert_sync_norm, make_norm

    sz = sizes(rehearse)
    device = "cpu" if rehearse else "cuda"
    backend = "gloo" if rehearse else "nccl"
    torch.backends.cudnn.allow_tf32 = False  # TF32 rounding would hide or invent differences
    torch.backends.cuda.matmul.allow_tf32 = False
    if device == "cuda":
        torch.cuda.set_device(0)
    calls = {"all_reduce": 0}
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(*a, **k):
        calls["all_reduce"] += 1
        return real_all_reduce(*a, **k)

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=dt.timedelta(seconds=60))
    dist.all_reduce = counting_all_reduce  # l2_batch_norm looks it up at call time
    world = dist.group.WORLD
    rows = []

    def force_group(module):
        n = 0
        for m in module.modules():
            if isinstance(m, SyncBatchNorm):
                m._group = lambda m=m: world if m.training else None  # world size 1 would skip it
                n += 1
        return n

    try:
        for kind in ("bn", "l2bn"):
            torch.manual_seed(0)
            plain = make_norm(kind, 16)
            with torch.no_grad():
                plain.weight.uniform_(0.5, 1.5)
                plain.bias.uniform_(-1, 1)
            plain.to(device).train()
            synced = convert_sync_norm(copy.deepcopy(plain))
            force_group(synced)
            x = (torch.randn(8, 16, 12, 10) * 3 + 2).to(device)
            g = torch.randn(8, 16, 12, 10).to(device)
            before = calls["all_reduce"]
            xs = [x.clone().requires_grad_(True) for _ in range(2)]
            ys = [plain(xs[0]), synced(xs[1])]
            for y in ys:
                y.backward(g)
            errs = {"y": scaled_err(ys[1], ys[0]), "dx": scaled_err(xs[1].grad, xs[0].grad),
                    "dweight": scaled_err(synced.weight.grad, plain.weight.grad),
                    "dbias": scaled_err(synced.bias.grad, plain.bias.grad),
                    "running_mean": scaled_err(synced.running_mean, plain.running_mean),
                    "running_var": scaled_err(synced.running_var, plain.running_var)}
            reduces = calls["all_reduce"] - before
            ok = all(v <= 1e-4 for v in errs.values()) and reduces == 2 and all_finite(ys)
            rows.append({"case": f"layer {kind}: {type(synced).__name__} vs {type(plain).__name__}", "ok": ok,
                         "errors": {k: float(f"{v:.3g}") for k, v in errs.items()}, "all_reduces": reduces})
        for norm in ("bn", "l2bn"):
            torch.manual_seed(0)
            plain = create_model("fcnn", norm=norm, width_mult=sz["sync_width"], dropout=0.0)
            plain.to(device).train()
            synced = convert_sync_norm(copy.deepcopy(plain))
            layers = force_group(synced)
            ddp = torch.nn.parallel.DistributedDataParallel(
                synced, device_ids=[0] if device == "cuda" else None)
            x = (torch.randn(sz["sync_input"]) * 2 + 0.5).to(device)
            y = torch.randint(0, 10, (sz["sync_input"][0],)).to(device)
            before = calls["all_reduce"]
            logits = [plain(x), ddp(x)]
            for lg in logits:
                F.cross_entropy(lg, y).backward()
            reduces = calls["all_reduce"] - before
            grads = dict(synced.named_parameters())
            g_err = max(scaled_err(grads[n].grad, p.grad) for n, p in plain.named_parameters())
            bufs = dict(synced.named_buffers())
            b_err = max((scaled_err(bufs[n], b) for n, b in plain.named_buffers() if b.is_floating_point()),
                        default=0.0)
            errs = {"logits": scaled_err(logits[1], logits[0]), "grads": g_err, "buffers": b_err}
            finite = all_finite(logits) and all_finite([p.grad for p in synced.parameters()])
            ok = (finite and errs["logits"] <= 1e-4 and g_err <= 1e-3 and b_err <= 1e-4
                  and reduces >= 2 * layers)
            rows.append({"case": f"fcnn {norm} under DDP, {layers} synchronized layers", "ok": ok,
                         "finite": finite, "errors": {k: float(f"{v:.3g}") for k, v in errs.items()},
                         "all_reduces": reduces})
    finally:
        dist.all_reduce = real_all_reduce
        dist.destroy_process_group()
    Path(result_path).write_text(json.dumps(plain_json({"backend": backend, "rows": rows}), allow_nan=False))
    return 0


def check_sync(device: str, sz: dict, rehearse: bool, tmp: Path) -> dict:
    result = tmp / "sync.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sync-worker", str(result)]
    if rehearse:
        cmd.append("--rehearse")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(rehearse), timeout=240)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed("the 1-process group did not finish within 240 s (a hung collective?)") from exc
    if proc.returncode != 0 or not result.is_file():
        raise CheckFailed(f"the 1-process run exited {proc.returncode}: {tail(proc.stderr)}")
    res = json.loads(result.read_text())
    bad = [r["case"] for r in res["rows"] if not r["ok"]]
    return {"status": "failed" if bad else "passed", "backend": res["backend"],
            "init_method": "tcp://127.0.0.1", "world_size": 1, "rows": res["rows"], "failed_cases": bad,
            "summary": f"{res['backend']}: {len(res['rows']) - len(bad)}/{len(res['rows'])} synchronized "
                       "cases equal to the unsynchronized ones"}


# ----------------------------------------------------------------------------- correctness: extract


def start_synth(tmp: Path, env: dict) -> tuple[subprocess.Popen, Path, Path]:
    data, log = tmp / "synth", tmp / "synth.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "asc", "data", "synth", "--out", str(data), "--preset",
                                 "tiny", "--duration", "2", "--seed", "0"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    return proc, data, log


def read_cache(stdout: str) -> dict:
    from asc.features.dataset import FeatureDataset

    cache = stdout.strip().splitlines()[-1]  # `asc extract` prints the cache folder last
    ds = FeatureDataset(cache, split=None)
    return {cid: ds.array(i) for i, cid in enumerate(ds.ids)}


def check_extract(device: str, sz: dict, rehearse: bool, tmp: Path, synth, soundfile_ok: bool,
                  soundfile_note: str) -> dict:
    import numpy as np

    if not soundfile_ok or synth is None:
        return {"status": "skipped", "reason": "skipped: soundfile missing", "soundfile": soundfile_note,
                "summary": "skipped: soundfile missing (carry its wheels in .whl/, see BENCHMARKS.md)"}
    proc, data, log = synth
    try:
        rc = proc.wait(timeout=300)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        raise CheckFailed("asc data synth did not finish within 300 s") from exc
    if rc != 0:
        raise CheckFailed(f"asc data synth exited {rc}: {tail(log.read_text())}")
    env = child_env(rehearse)
    common = ["extract", "--data", str(data), "--features", str(FEATURES), "--splits", "evaluate",
              "--dtype", "float32"]
    t0 = time.perf_counter()
    ref = read_cache(run_asc([*common, "--out", str(tmp / "cache-cpu"), "--device", "cpu", "--workers", "2"],
                             env, 300))
    cpu_s = time.perf_counter() - t0
    dev_flag = "cpu" if rehearse else "cuda"
    t0 = time.perf_counter()
    got = read_cache(run_asc([*common, "--out", str(tmp / "cache-dev"), "--device", dev_flag, "--workers",
                              str(sz["extract_workers"]), "--batch-size", "8"], env, 300))
    dev_s = time.perf_counter() - t0
    if sorted(got) != sorted(ref):
        raise CheckFailed(f"the caches hold different clips: {len(got)} on {dev_flag}, {len(ref)} on cpu")
    if not ref:
        raise CheckFailed("no clips were extracted")
    a = np.stack([got[k] for k in sorted(ref)])
    b = np.stack([ref[k] for k in sorted(ref)])
    if a.shape != b.shape:
        raise CheckFailed(f"feature shapes differ: {a.shape} on {dev_flag}, {b.shape} on cpu")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    per_channel = [float(diff[:, c].max()) for c in range(diff.shape[1])]
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    finite = bool(np.isfinite(a).all())
    tol_max, tol_mean = 2e-3, 1e-4
    ok = finite and max_abs <= tol_max and mean_abs <= tol_mean
    return {"status": "passed" if ok else "failed", "clips": len(ref), "shape": list(a.shape[1:]),
            "compared": f"--device {dev_flag} --workers {sz['extract_workers']} against --device cpu "
                        "--workers 2, float32 caches",
            "max_abs_per_channel": [float(f"{v:.3g}") for v in per_channel],
            "max_abs": float(f"{max_abs:.3g}"), "mean_abs": float(f"{mean_abs:.3g}"),
            "limits": {"max_abs": tol_max, "mean_abs": tol_mean}, "finite": finite,
            "wall_s": {"cpu": round(cpu_s, 2), dev_flag + ("" if rehearse else "_run"): round(dev_s, 2)},
            "soundfile": soundfile_note,
            "summary": f"{len(ref)} clips, largest difference {max_abs:.2g}, mean {mean_abs:.2g} "
                       "(features in [0, 1])"}


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_l2bn_layer(device: str, sz: dict, compiled: bool, deadline: float) -> dict:
    """L2BN / BatchNorm2d forward+backward; interleaved repeats, medians (bench_l2bn.py's timing step)."""
    import torch
    from torch import nn

    sys.path.insert(0, str(SCRIPTS))
    import bench_l2bn

    from asc.nn import L2BatchNorm2d

    shapes = sz["bench_shapes"] or bench_l2bn.DEFAULT_SHAPES
    rows, skipped = [], []
    for s in shapes:
        if time.perf_counter() > deadline:
            skipped.append(s)
            continue
        shape = tuple(int(v) for v in s.split("x"))
        c = shape[1]
        torch.manual_seed(0)
        x = torch.randn(*shape, device=device).mul_(2).add_(0.5).requires_grad_(True)
        grad = torch.randn(*shape, device=device)
        variants = {"bn": nn.BatchNorm2d(c), "l2bn": L2BatchNorm2d(c)}
        if not compiled:
            variants["naive"] = bench_l2bn.NaiveL2BN(c)
        for m in variants.values():
            m.to(device).train()
        if compiled:
            torch._dynamo.reset()
            variants = {k: torch.compile(m, backend=sz["compile_backend"], dynamic=False)
                        for k, m in variants.items()}
        t0 = time.perf_counter()
        for _ in range(sz["bench_warmup"]):  # warm-up, and compilation
            for m in variants.values():
                x.grad = None
                bench_l2bn.time_step(m, x, grad, device)
        warm_s = time.perf_counter() - t0
        times = {k: [] for k in variants}
        for _ in range(sz["bench_reps"]):
            for k, m in variants.items():
                x.grad = None
                times[k].append(bench_l2bn.time_step(m, x, grad, device))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = {"shape": s, "bn_ms": round(med["bn"], 4), "l2bn_ms": round(med["l2bn"], 4),
               "l2bn_vs_bn": round(med["l2bn"] / med["bn"], 3), "warmup_s": round(warm_s, 1)}
        if "naive" in med:
            row["naive_ms"] = round(med["naive"], 4)
            row["naive_vs_bn"] = round(med["naive"] / med["bn"], 3)
        rows.append(row)
        del x, grad, variants
    ratios = [r["l2bn_vs_bn"] for r in rows]
    out = {"status": "measured" if rows else "skipped", "mode": "compiled" if compiled else "eager",
           "rows": rows, "reps": sz["bench_reps"], "dtype": "float32"}
    if compiled:
        out["backend"] = sz["compile_backend"]
    if skipped:
        out["skipped_shapes"] = skipped
        out["reason"] = "time budget"
    if ratios:
        out["worst"] = max(ratios)
        out["geomean"] = round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 3)
        out["summary"] = (f"L2BN/BN {', '.join(f'{r:.2f}' for r in ratios)} on "
                          f"{', '.join(r['shape'] for r in rows)}")
    else:
        out["summary"] = "skipped: time budget"
    return out


def time_train_step(device: str, sz: dict, deadline: float) -> dict:
    import torch

    sys.path.insert(0, str(SCRIPTS))
    import bench_train

    from asc.models import create_model

    rows, skipped = [], []
    batch = sz["train_batch"]
    for name in TIMED_MODELS:
        for precision in ("float32", "bf16"):
            if time.perf_counter() > deadline:
                skipped.append(f"{name} {precision}")
                continue
            amp = precision == "bf16"
            torch.manual_seed(0)
            x = torch.randn(batch, *sz["train_input"], device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            if device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            runs = {}
            for norm in ("bn", "l2bn"):
                torch.manual_seed(0)
                m = create_model(name, norm=norm, width_mult=sz["train_width"]).to(device).train()
                if device == "cuda":
                    m = m.to(memory_format=torch.channels_last)
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                runs[norm] = (m, opt, [])
            for _ in range(sz["train_warmup"]):
                for m, opt, _t in runs.values():
                    bench_train.step_time(m, opt, x, y, device, amp)
            for _ in range(sz["train_reps"]):
                for m, opt, times in runs.values():
                    times.append(bench_train.step_time(m, opt, x, y, device, amp))
            med = {k: statistics.median(v[2]) for k, v in runs.items()}
            rows.append({"model": name, "precision": precision,
                         "bn_samples_s": round(batch / med["bn"], 1),
                         "l2bn_samples_s": round(batch / med["l2bn"], 1),
                         "l2bn_vs_bn": round(med["l2bn"] / med["bn"], 3)})
            del runs, x, y
            if device == "cuda":
                torch.cuda.empty_cache()
    out = {"status": "measured" if rows else "skipped", "rows": rows, "batch": batch,
           "input": list(sz["train_input"]), "width_mult": sz["train_width"], "reps": sz["train_reps"],
           "channels_last": device == "cuda"}
    if skipped:
        out["skipped"] = skipped
        out["reason"] = "time budget"
    if rows:
        out["worst"] = max(r["l2bn_vs_bn"] for r in rows)
        out["summary"] = ", ".join(f"{r['model']} {r['precision']} {r['l2bn_vs_bn']:.3f}" for r in rows)
    else:
        out["summary"] = "skipped: time budget"
    return out


def time_extract(device: str, sz: dict) -> dict:
    import numpy as np
    import torch

    from asc.features.logmel import LogMelExtractor, bind_duration, load_feature_config

    cfg = bind_duration(load_feature_config(FEATURES), sz["clip_s"], str(FEATURES))
    n = int(round(cfg["sample_rate"] * sz["clip_s"]))
    rng = np.random.default_rng(0)
    bsz = sz["gpu_batch"]
    t = np.arange(n, dtype=np.float64) / cfg["sample_rate"]
    waves = np.stack([(0.1 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t))
                      .astype(np.float32) for i in range(bsz)])
    dtype = getattr(torch, cfg["storage"]["dtype"])

    # the device, batched: host arrays in, stored dtype out (as `asc extract --device cuda` computes)
    ext = LogMelExtractor(cfg, device=device)
    for _ in range(2):
        ext(waves).to(dtype).cpu().numpy()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(sz["gpu_batches"]):
        ext(waves).to(dtype).cpu().numpy()
    _sync(device)
    dev_rate = bsz * sz["gpu_batches"] / (time.perf_counter() - t0)

    # the CPU as each extract worker runs it: one clip at a time on one thread
    cpu = LogMelExtractor(cfg, device="cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for i in range(2):
            cpu.numpy(waves[i], cfg["storage"]["dtype"])
        t0 = time.perf_counter()
        for i in range(sz["cpu_clips"]):
            cpu.numpy(waves[i % bsz], cfg["storage"]["dtype"])
        cpu_rate = sz["cpu_clips"] / (time.perf_counter() - t0)
        torch.set_num_threads(min(2, threads))  # batched on two CPU threads, for comparison
        cpu(waves).to(dtype).numpy()
        t0 = time.perf_counter()
        cpu(waves).to(dtype).numpy()
        cpu_batched = bsz / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    two_core = 2 * cpu_rate  # an upper bound for 2 workers (BENCHMARKS.md measured 1.36x one)
    return {"status": "measured", "clip_s": sz["clip_s"], "batch": bsz,
            "device_batched_clips_s": round(dev_rate, 1), "cpu_1thread_clips_s": round(cpu_rate, 1),
            "cpu_2core_clips_s": round(two_core, 1), "cpu_batched_2threads_clips_s": round(cpu_batched, 1),
            "device_vs_2core_cpu": round(dev_rate / two_core, 2),
            "note": "2-core CPU = 2 x one worker's rate (one clip at a time, one thread), which two workers "
                    "do not exceed",
            "summary": f"{dev_rate:.0f} clips/s on {device} (batches of {bsz}) vs {two_core:.0f} on 2 CPU "
                       f"cores: {dev_rate / two_core:.1f}x"}


# ----------------------------------------------------------------------------- report


def evaluate_targets(timings: dict) -> list[dict]:
    measured = {
        "l2bn_eager_vs_bn": timings.get("l2bn_layer_eager", {}).get("worst"),
        "l2bn_compiled_vs_bn": timings.get("l2bn_layer_compiled", {}).get("worst"),
        "train_step_l2bn_vs_bn": timings.get("train_step", {}).get("worst"),
        "extract_gpu_vs_2core_cpu": timings.get("extract_throughput", {}).get("device_vs_2core_cpu"),
    }
    out = []
    for key, (what, op, goal) in TARGETS.items():
        value = measured[key]
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        out.append({"target": key, "what": what, "goal": f"{op} {goal:.2f}", "measured": value, "met": met})
    return out


def plain_json(obj):
    """The report with NaN/Inf (an error that is not finite) as strings, so the JSON stays strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    return obj


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(report: dict) -> str:
    env = report["environment"]
    rehearse = report["mode"] == "rehearse"
    lines = ["# GPU check", ""]
    where = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    changes = " (with changes)" if env.get("git_changes") else ""
    lines.append(f"{report['started']}, {where}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
                 f"cuDNN {env.get('cudnn')}; {report['elapsed_s']:.0f} s in all; "
                 f"commit {str(env.get('git_commit', '?'))[:12]}{changes}.")
    if rehearse:
        lines += ["", "**Rehearsal** on the CPU at tiny sizes: it tests the script; its timings measure "
                  "nothing."]
    lines += ["", "## Correctness", "", "| check | status | detail |", "|---|---|---|"]
    for name, res in report["checks"].items():
        detail = " ".join(str(res.get("summary") or res.get("error", "")).split()).replace("|", "\\|")
        lines.append(f"| {name} | {res['status']} | {detail} |")
    lines += ["", "## Timing (ratios measured in this run)", ""]
    t = report["timings"]
    for key in ("l2bn_layer_eager", "l2bn_layer_compiled"):
        res = t.get(key, {})
        lines.append(f"L2BN / BN forward+backward, {res.get('mode', key)}: {res.get('status', 'not run')}")
        if res.get("rows"):
            lines += ["", "| shape | BN ms | L2BN ms | L2BN / BN |", "|---|---:|---:|---:|"]
            lines += [f"| {r['shape']} | {r['bn_ms']:.3f} | {r['l2bn_ms']:.3f} | {r['l2bn_vs_bn']:.2f} |"
                      for r in res["rows"]]
        if res.get("error"):
            lines.append(f"error: {res['error']}")
        lines.append("")
    res = t.get("train_step", {})
    lines.append(f"Training step (batch {res.get('batch')}, width_mult {res.get('width_mult')}): "
                 f"{res.get('status', 'not run')}")
    if res.get("rows"):
        lines += ["", "| model | precision | BN samples/s | L2BN samples/s | L2BN / BN time |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['precision']} | {r['bn_samples_s']:.1f} | "
                  f"{r['l2bn_samples_s']:.1f} | {r['l2bn_vs_bn']:.3f} |" for r in res["rows"]]
    if res.get("error"):
        lines.append(f"error: {res['error']}")
    lines.append("")
    res = t.get("extract_throughput", {})
    what = res.get("summary") or res.get("error") or res.get("status", "not run")
    lines.append(f"Feature extraction: {what}")
    lines += ["", "## Targets", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for r in report["targets"]:
        met = "n/a" if r["met"] is None else ("yes" if r["met"] else "no")
        if rehearse:
            met = f"{met} (rehearsal)"
        value = "-" if r["measured"] is None else f"{r['measured']:.3g}"
        lines.append(f"| {r['what']} | {r['goal']} | {value} | {met} |")
    failed = [k for k, r in report["checks"].items() if r["status"] == "failed"]
    skipped = [k for k, r in report["checks"].items() if r["status"] == "skipped"]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "every check that ran passed"
    lines += ["", f"Correctness: {verdict}{'; skipped: ' + ', '.join(skipped) if skipped else ''}.", ""]
    return "\n".join(lines)


def save(report: dict, out: Path, clock: Clock) -> None:
    report["elapsed_s"] = round(clock.elapsed(), 1)
    report["targets"] = evaluate_targets(report["timings"])
    report["all_checks_passed"] = all(r["status"] in ("passed", "skipped") for r in report["checks"].values())
    write_atomic(out / "gpu-check.json", json.dumps(plain_json(report), indent=2, allow_nan=False) + "\n")
    write_atomic(out / "gpu-check.md", markdown(report))


def run_step(report: dict, section: str, name: str, clock: Clock, out: Path, fn, *args) -> None:
    clock.log(f"{name}: running")
    t0 = time.perf_counter()
    try:
        res = fn(*args)
    except CheckFailed as exc:
        res = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # a crash fails the check (or marks the timing) with its traceback
        res = {"status": "failed" if section == "checks" else "error",
               "error": f"{type(exc).__name__}: {exc}", "traceback": tail(traceback.format_exc(), 3000)}
    res["elapsed_s"] = round(time.perf_counter() - t0, 1)
    report[section][name] = res
    clock.log(f"{name}: {res['status']} in {res['elapsed_s']:.1f} s - "
              f"{res.get('summary') or res.get('error', '')}")
    save(report, out, clock)


CHECKS = ("l2bn", "amp_step", "sync", "extract")
TIMINGS = ("l2bn_layer_eager", "l2bn_layer_compiled", "train_step", "extract_throughput")


def default_out() -> str:
    return os.environ.get("OUT") or "gpu-check"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", metavar="DIR", default=None,
                    help="folder for gpu-check.json and gpu-check.md (default: $OUT if set, else "
                         "./gpu-check)")
    ap.add_argument("--rehearse", action="store_true", help="every step on the CPU at tiny sizes")
    ap.add_argument("--only", metavar="NAMES", default=None,
                    help=f"comma-separated steps to run (default: all): {', '.join(CHECKS + TIMINGS)}")
    ap.add_argument("--budget", type=float, default=None, metavar="S",
                    help="seconds after which timings not yet started are skipped, so that the whole run "
                         "stays within 8 minutes on an H100 (default 360; rehearsal 120)")
    ap.add_argument("--sync-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    selected = set(CHECKS + TIMINGS)
    if args.only:
        selected = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = sorted(selected - set(CHECKS + TIMINGS))
        if unknown:
            ap.error(f"--only: unknown step {unknown[0]!r}; known: {', '.join(CHECKS + TIMINGS)}")

    if args.rehearse:
        os.environ["ASC_NATIVE"] = "0"  # before asc is imported: the torch-op code that CUDA runs
    if args.sync_worker:
        return sync_worker(args.sync_worker, args.rehearse)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-CUDA case prints exactly one line
        import torch

        has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.rehearse:
        print(NO_CUDA)
        return 0

    clock = Clock()
    device = "cpu" if args.rehearse else "cuda"
    sz = sizes(args.rehearse)
    budget = args.budget if args.budget is not None else (120.0 if args.rehearse else 360.0)
    deadline = time.perf_counter() + budget
    out = Path(args.out or default_out())
    out.mkdir(parents=True, exist_ok=True)
    soundfile_ok, soundfile_note = soundfile_state()
    report = {
        "schema": 1,
        "mode": "rehearse" if args.rehearse else "cuda",
        "command": " ".join(["scripts/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": {**environment(args.rehearse, device), "soundfile": soundfile_note},
        "checks": {},
        "timings": {},
        "budget_s": budget,
        "only": sorted(selected) if args.only else None,
    }
    clock.log(f"{report['mode']} on {report['environment'].get('gpu', 'cpu')}, torch {torch.__version__}, "
              f"soundfile {soundfile_note}; writing {out}")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    synth = None
    steps = [
        ("checks", "l2bn", check_l2bn, (device, sz)),
        ("checks", "amp_step", check_amp_step, (device, sz)),
        ("checks", "sync", check_sync, (device, sz, args.rehearse, tmp)),
        ("checks", "extract", check_extract, (device, sz, args.rehearse, tmp, None, soundfile_ok,
                                              soundfile_note)),
        ("timings", "l2bn_layer_eager", time_l2bn_layer, (device, sz, False, deadline)),
        ("timings", "l2bn_layer_compiled", time_l2bn_layer, (device, sz, True, deadline)),
        ("timings", "train_step", time_train_step, (device, sz, deadline)),
        ("timings", "extract_throughput", time_extract, (device, sz)),
    ]
    try:
        if soundfile_ok and "extract" in selected:  # in the background while the first checks run
            synth = start_synth(tmp, child_env(args.rehearse))
        for section, name, fn, fargs in steps:
            if name not in selected:
                report[section][name] = {"status": "skipped", "reason": "not selected (--only)",
                                         "summary": "not selected (--only)"}
            elif section == "timings" and name != "extract_throughput" and time.perf_counter() > deadline:
                report[section][name] = {"status": "skipped", "reason": "time budget",
                                         "summary": f"skipped: time budget of {budget:.0f} s spent"}
                clock.log(f"{name}: skipped (time budget)")
            else:
                if name == "extract":
                    fargs = (*fargs[:4], synth, *fargs[5:])
                run_step(report, section, name, clock, out, fn, *fargs)
    finally:
        if synth is not None and synth[0].poll() is None:
            synth[0].kill()
            synth[0].wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    save(report, out, clock)
    failed = [k for k, r in report["checks"].items() if r["status"] == "failed"]
    errors = [k for k, r in report["timings"].items() if r["status"] == "error"]
    skipped = [k for k, r in report["checks"].items() if r["status"] == "skipped"]
    verdict = "FAILED: " + ", ".join(failed) if failed else "none failed"
    if skipped:
        verdict += f" ({len(skipped)} skipped: {', '.join(skipped)})"
    clock.log(f"done: checks {verdict}"
              f"{'; timing errors: ' + ', '.join(errors) if errors else ''}; "
              f"{out / 'gpu-check.json'}, {out / 'gpu-check.md'}")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
