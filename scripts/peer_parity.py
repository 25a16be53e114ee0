#!/usr/bin/python3
"""rotq against the reference code on the same inputs: GPTQ (QuaRot's GPTQ.fasterquant) and one
DFRot iteration (DFRot's scripts/optimize_procrustes_alter.py), timed interleaved, min of N.

The reference code is imported unchanged from a checkout the user brings (rotq never copies it):

  python3 scripts/peer_parity.py gptq  --rotq build/rotq --quarot ~/src/QuaRot --size 4096
  python3 scripts/peer_parity.py dfrot --rotq build/rotq --dfrot ~/src/DFRot --dim 4096 --tokens 2048

Inputs are written once as .npy (or given with --weight/--hessian, --tokens-file/--rotation) and
both sides read the same files; each side times its own solve (file reading excluded), on the
same number of threads. Needs PyTorch and NumPy (Debian: python3-torch python3-numpy). The
allocator settings of TOOLCHAIN.md are applied to both processes (fresh pages cost ~15 us here).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import types

ALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736",
             "OMP_WAIT_POLICY": "PASSIVE"}


def reexec_with_allocator_env():
    if all(os.environ.get(k) == v for k, v in ALLOC_ENV.items()):
        return
    env = dict(os.environ, **ALLOC_ENV)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def stub_modules(names):
    """Empty stand-ins for the reference code's imports that the timed functions never use
    (transformers, accelerate, fast_hadamard_transform): attribute access yields a dummy class."""
    class Stub(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            full = f"{self.__name__}.{attr}"
            if full not in sys.modules:
                sys.modules[full] = Stub(full) if attr[:1].islower() else type(attr, (), {})
            return sys.modules[full]
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), Stub(".".join(parts[:i])))


def run_rotq(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"peer_parity: no JSON line from {' '.join(cmd)}")
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# GPTQ

def make_gptq_inputs(a, np):
    rng = np.random.default_rng(a.seed)
    n = a.size
    w = rng.standard_normal((n, n), dtype=np.float32)
    # Calibration-like inputs: per-channel scales spread over two decades, a few heavy channels.
    scale = (0.1 + 3 * rng.random(n)).astype(np.float32)
    scale[rng.choice(n, 8, replace=False)] *= 20
    x = rng.standard_normal((2 * n, n), dtype=np.float32) * scale
    h = (x.T @ x) * np.float32(2.0 / x.shape[0])
    return w, h.astype(np.float32)


def quarot_gptq(a, torch, w, h):
    sys.path.insert(0, os.path.join(a.quarot, "fake_quant"))
    stub_modules(["transformers", "accelerate", "accelerate.utils", "fast_hadamard_transform",
                  "tqdm"])
    import gptq_utils
    import quant_utils
    torch.cuda.synchronize = lambda *args, **kw: None  # fasterquant calls it unconditionally

    def solve():
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data = torch.from_numpy(w).clone()
        g = gptq_utils.GPTQ(layer)
        g.H = torch.from_numpy(h).clone()
        g.quantizer = quant_utils.WeightQuantizer()
        g.quantizer.configure(a.bits, perchannel=True, sym=not a.asym, mse=a.mse)
        t0 = time.perf_counter()
        g.fasterquant(blocksize=128, percdamp=a.percdamp, groupsize=a.group or -1,
                      actorder=a.act_order, static_groups=False)
        seconds = time.perf_counter() - t0
        return layer.weight.data.numpy(), g.quantizer.scale.reshape(-1).numpy(), seconds
    return solve


def gptq(a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    os.makedirs(a.workdir, exist_ok=True)
    wf, hf = a.weight or os.path.join(a.workdir, "W.npy"), a.hessian or os.path.join(a.workdir, "H.npy")
    if not (a.weight and a.hessian):
        w, h = make_gptq_inputs(a, np)
        np.save(wf, w)
        np.save(hf, h)
    w, h = np.load(wf).astype(np.float32), np.load(hf).astype(np.float32)
    qf = os.path.join(a.workdir, "Q_rotq.npy")
    cmd = [a.rotq, "--log-level", "warn", "--threads", str(a.threads), "parity", "gptq",
           "--weight", wf, "--hessian", hf, "--out", qf, "--bits", str(a.bits),
           "--percdamp", str(a.percdamp), "--group", str(a.group), "--json"]
    cmd += (["--asym"] if a.asym else []) + (["--mse"] if a.mse else []) + \
        (["--act-order"] if a.act_order else [])
    peer = quarot_gptq(a, torch, w, h)
    t_rotq, t_peer = [], []
    for rep in range(a.repeats):
        r = run_rotq(cmd)
        t_rotq.append(r["seconds"])
        q_peer, scale, s = peer()
        t_peer.append(s)
        print(f"repeat {rep + 1}/{a.repeats}: rotq {r['seconds']:.3f} s, QuaRot {s:.3f} s",
              flush=True)
    q_rotq = np.load(qf)
    steps = np.abs(q_rotq.astype(np.float64) - q_peer) / scale[:, None]
    differ = float(np.mean(steps > 0.5))
    report = {"stage": "gptq", "size": list(w.shape), "bits": a.bits, "mse": a.mse,
              "act_order": a.act_order, "group": a.group, "threads": a.threads,
              "rotq_seconds": t_rotq, "quarot_seconds": t_peer,
              "speedup_min": min(t_peer) / min(t_rotq),
              "fraction_one_step_apart": differ, "max_steps_apart": float(steps.max()),
              "rotq_gflops": r.get("gflops"), "gemm_gflops": r.get("gemm_gflops")}
    print_report(report, a)


# ---------------------------------------------------------------------------------------------
# DFRot: one iteration of the alternating Procrustes as DFRot's script runs it (re-weight the
# massive tokens by alpha, one get_best_rotate_via_procrustes step, accumulate, re-orthogonalise)

def make_dfrot_inputs(a, np):
    rng = np.random.default_rng(a.seed)
    x = rng.standard_normal((a.tokens, a.dim), dtype=np.float32)
    x[: max(1, a.tokens // 256), 5] = np.sqrt(a.dim) * 8  # massive activations in one channel
    # A randomized Hadamard start as the reference: a signed Sylvester Hadamard (dim a power of 2).
    hd = np.ones((1, 1), dtype=np.float64)
    while hd.shape[0] < a.dim:
        hd = np.block([[hd, hd], [hd, -hd]])
    if hd.shape[0] != a.dim:
        sys.exit("peer_parity dfrot: --dim must be a power of two for the generated start")
    r0 = (hd * rng.choice([-1.0, 1.0], a.dim)[:, None]) / np.sqrt(a.dim)
    return x, r0


def dfrot_peer(a, torch, x, r0, massive):
    sys.path.insert(0, os.path.join(a.dfrot))
    sys.path.insert(0, os.path.join(a.dfrot, "scripts"))
    stub_modules(["fast_hadamard_transform", "transformers", "misc", "tqdm"])
    sys.modules["tqdm"].tqdm = lambda it, **kw: it
    import optimize_procrustes_alter as ref

    def solve(steps):
        a_init = torch.from_numpy(x)
        start = torch.from_numpy(r0).float()
        done = []
        t0 = time.perf_counter()
        rotated = a_init @ start
        mask = torch.from_numpy(massive).reshape(-1, 1)
        big = torch.where(mask, rotated * a.gamma, rotated)  # the script's re-weighting
        r_opt = torch.eye(a.dim)
        # The script logs one line per step it runs (it stops early once a step gains < 0.1).
        step = ref.get_best_rotate_via_procrustes(big @ r_opt, done.append, n_bits=a.bits,
                                                  steps=steps, clip_ratio=1.0, args=None)
        r_opt = torch.linalg.qr(r_opt @ step)[0]
        seconds = time.perf_counter() - t0
        return (start @ r_opt).numpy(), seconds, len(done)
    return solve


def dfrot(a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    os.makedirs(a.workdir, exist_ok=True)
    xf = a.tokens_file or os.path.join(a.workdir, "X.npy")
    rf = a.rotation or os.path.join(a.workdir, "R0.npy")
    if not (a.tokens_file and a.rotation):
        x, r0 = make_dfrot_inputs(a, np)
        np.save(xf, x)
        np.save(rf, r0)
    x, r0 = np.load(xf).astype(np.float32), np.load(rf).astype(np.float64)
    # The reference's massive-token rule on the unrotated tokens (error < 8.5 at LLaMA's scale).
    xt = torch.from_numpy(x).double()
    scale = xt.abs().amax(1, keepdim=True).clamp(min=1e-5) / 7
    err = (xt - (xt / scale).round().clamp(-8, 7) * scale).norm(dim=1)
    massive = (err < 8.5 / 64 * xt.norm(dim=1)).numpy()
    mf = os.path.join(a.workdir, "massive.npy")
    np.save(mf, massive)
    of = os.path.join(a.workdir, "R_rotq.npy")

    def rotq_cmd(iters):
        return [a.rotq, "--log-level", "warn", "--threads", str(a.threads), "parity", "dfrot",
                "--tokens", xf, "--rotation", rf, "--massive", mf, "--gamma", str(a.gamma),
                "--bits", str(a.bits), "--iters", str(iters), "--route", a.route, "--out", of,
                "--json"]
    peer = dfrot_peer(a, torch, x, r0, massive)
    # One-iteration runs (setup and finish included on both sides), then runs of --iters
    # iterations: the difference is what each further iteration costs.
    t_rotq, t_peer, t_rotq_k, t_peer_k, peer_steps, rotq_iters = [], [], [], [], [], []
    for rep in range(a.repeats):
        r = run_rotq(rotq_cmd(1))
        t_rotq.append(r["seconds"])
        r_rotq = np.load(of)
        r_peer, s, _ = peer(1)
        t_peer.append(s)
        line = f"repeat {rep + 1}/{a.repeats}: 1 iteration: rotq {r['seconds']:.3f} s, DFRot {s:.3f} s"
        if a.iters > 1:
            rk = run_rotq(rotq_cmd(a.iters))
            t_rotq_k.append(rk["seconds"])
            rotq_iters.extend(rk["iteration_seconds"][:-1])  # the last pass forms no sum
            _, sk, steps = peer(a.iters)
            t_peer_k.append(sk)
            peer_steps.append(steps)
            line += f"; {a.iters}: rotq {rk['seconds']:.3f} s, DFRot {sk:.3f} s ({steps} steps)"
        print(line, flush=True)
    # Column signs are arbitrary in the reference's QR, and with fewer tokens than channels the
    # rotation is free outside the tokens' span: compare what the objective sees, x·R.
    xr_rotq, xr_peer = x.astype(np.float64) @ r_rotq, x.astype(np.float64) @ r_peer
    sign = np.sign(np.sum(xr_rotq * xr_peer, axis=0))
    rel = np.linalg.norm(xr_rotq - xr_peer * sign) / np.linalg.norm(xr_peer)
    report = {"stage": "dfrot", "dim": a.dim, "tokens": a.tokens, "threads": a.threads,
              "massive": int(massive.sum()), "gamma": a.gamma, "route": a.route,
              "rotq_seconds": t_rotq, "dfrot_seconds": t_peer,
              "speedup_min": min(t_peer) / min(t_rotq), "rotated_tokens_relative_difference": rel,
              "rotq_orthogonality": float(np.abs(r_rotq.T @ r_rotq - np.eye(a.dim)).max())}
    if a.iters > 1:
        if min(peer_steps) != max(peer_steps) or peer_steps[0] < 2:
            sys.exit(f"peer_parity dfrot: the reference ran {peer_steps} steps of {a.iters}")
        # rotq times each iteration in-process (step + next pass, between loss reads); the
        # reference's loop is timed by difference (its start and finish are the same in both).
        rotq_iter = min(rotq_iters)
        peer_iter = (min(t_peer_k) - min(t_peer)) / (peer_steps[0] - 1)
        # rotq by the reference's method too (whole runs of 1 and k iterations).
        rotq_diff = (min(t_rotq_k) - min(t_rotq)) / (a.iters - 1)
        report.update({"iters": a.iters, "rotq_seconds_k": t_rotq_k, "dfrot_seconds_k": t_peer_k,
                       "dfrot_steps_k": peer_steps[0], "rotq_iteration_seconds": rotq_iters,
                       "rotq_seconds_per_iteration": rotq_iter,
                       "dfrot_seconds_per_iteration": peer_iter,
                       "speedup_per_iteration": peer_iter / rotq_iter,
                       "rotq_seconds_per_iteration_by_difference": rotq_diff,
                       "speedup_per_iteration_by_difference": peer_iter / rotq_diff})
    print_report(report, a)


def print_report(report, a):
    print(json.dumps(report))
    if a.record:
        with open(a.record, "a") as f:
            f.write(json.dumps(report) + "\n")


def main():
    reexec_with_allocator_env()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    for name in ("gptq", "dfrot"):
        s = sub.add_parser(name)
        s.add_argument("--rotq", default="build/rotq")
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--repeats", type=int, default=3)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--bits", type=int, default=4)
        s.add_argument("--workdir", default="/tmp/rotq-parity")
        s.add_argument("--record", help="append the JSON report to this file")
    g = sub.choices["gptq"]
    g.add_argument("--quarot", required=True, help="a checkout of github.com/spcl/QuaRot")
    g.add_argument("--size", type=int, default=4096)
    g.add_argument("--weight"), g.add_argument("--hessian")
    g.add_argument("--asym", action="store_true")
    g.add_argument("--mse", action="store_true", default=True)
    g.add_argument("--no-mse", dest="mse", action="store_false")
    g.add_argument("--act-order", action="store_true")
    g.add_argument("--group", type=int, default=0)
    g.add_argument("--percdamp", type=float, default=0.01)
    d = sub.choices["dfrot"]
    d.add_argument("--dfrot", required=True, help="a checkout of github.com/JingyangXiang/DFRot")
    d.add_argument("--dim", type=int, default=4096)
    d.add_argument("--tokens", type=int, default=2048)
    d.add_argument("--tokens-file"), d.add_argument("--rotation")
    d.add_argument("--gamma", type=float, default=100.0)
    d.add_argument("--iters", type=int, default=3,
                   help="also time runs of this many iterations (per-iteration cost; 1: off)")
    d.add_argument("--route", default="auto", choices=["auto", "full"],
                   help="rotq's route: auto (the tokens' span when N < C) or full (C×C)")
    a = p.parse_args()
    (gptq if a.stage == "gptq" else dfrot)(a)


if __name__ == "__main__":
    main()
