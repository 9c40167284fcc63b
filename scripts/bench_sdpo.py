"""SDPO step benchmark: memory and speed of one student + teacher forward, loss and backward.

Side by side in one run, each measurement in its own process (peak RSS is per process), on the
default model with gradient checkpointing, at several sequence lengths:

- agentsd: hidden states only, projected to the vocabulary chunk by chunk with recomputation in
  backward (agentsd.sdpo.chunked_head), top-k + tail reverse KL, the staleness-corrected token mean;
- trl: TRL's SDPO top-k loss path (trl.experimental.sdpo): full logits from the model's forward for
  student and teacher, then `compute_topk_self_distillation_loss`; TRL from the bench extra
  (scripts/setup_bench.sh), on the same torch and transformers;
- naive: full logits and the exact full-vocabulary reverse KL (the reference the tests pin to);
- agentsd_rows: agentsd with one temperature per row, as the trainer runs it (per-turn sampling).

The student sequence has T tokens, the last 3/4 of them agent tokens (trained); the teacher sees a
256-token hindsight context before the same tokens. tokens/s counts the student's T per step. MFU is
model FLOPs (6·N·T for the student, 2·N·T for the teacher, attention and the head at trained
positions; recomputation not counted) per second over the fp32 matmul peak measured in this run.
A process whose RSS passes --rss-limit-gib is killed and reported as such. Every worker runs with
the same glibc setting, MALLOC_MMAP_THRESHOLD_ (--mmap-threshold, default 1 MiB as the trainer sets
it; 0 leaves glibc's dynamic threshold, under which activations just below 32 MB fragment the heap
and inflate peak RSS).

usage: python scripts/bench_sdpo.py [--tokens 1024 4096 8192 16384] [--paths agentsd trl naive]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HINDSIGHT_TOKENS = 256
TOP_K = 100
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


# ---------------------------------------------------------------------------------------- workers


def _load(model_path: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    return model


def _data(model: Any, tokens: int) -> tuple[Any, Any, Any]:
    """Student ids [1, T], teacher ids [1, 256 + T], positions of the trained tokens in the student."""
    import torch

    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    student = torch.randint(0, vocab, (1, tokens), generator=gen)
    hindsight = torch.randint(0, vocab, (1, HINDSIGHT_TOKENS), generator=gen)
    teacher = torch.cat([hindsight, student], dim=1)
    trained = torch.arange(tokens // 4, tokens)
    return student, teacher, trained


def _step_agentsd_rows(model: Any, student: Any, teacher: Any, trained: Any) -> None:
    """The trainer's path: one sampling temperature per row (turns sampled at different ones)."""
    _step_agentsd(model, student, teacher, trained, per_row=True)


def _step_agentsd(model: Any, student: Any, teacher: Any, trained: Any, per_row: bool = False) -> None:
    import torch

    from agentsd.config import SDPOConfig
    from agentsd.sdpo import TokenBatch, chunked_head, sdpo_loss_from_terms

    decoder, weight = model.base_model, model.get_output_embeddings().weight
    with torch.no_grad():
        teacher_rows = decoder(input_ids=teacher).last_hidden_state[0][trained - 1 + HINDSIGHT_TOKENS]
    rows = decoder(input_ids=student).last_hidden_state[0][trained - 1]
    y = student[0, trained]
    temperature: Any = torch.full((len(trained),), 0.9) if per_row else 0.9
    divergence, logp, teacher_logp = chunked_head(
        rows, weight, teacher_rows, weight.detach(), y, k=TOP_K, temperature=temperature, chunk=1024
    )
    n = len(trained)
    batch = TokenBatch(
        tokens=y,
        behaviour_logp=logp.detach(),
        mask=torch.ones(n, dtype=torch.bool),
        versions=torch.zeros(n, dtype=torch.long),
        turn_index=torch.zeros(n, dtype=torch.long),
        trajectory_index=torch.zeros(n, dtype=torch.long),
    )
    out = sdpo_loss_from_terms(batch, divergence, logp, teacher_logp, SDPOConfig(top_k=TOP_K), version=0)
    out.loss.backward()


def _step_naive(model: Any, student: Any, teacher: Any, trained: Any) -> None:
    import torch

    with torch.no_grad():
        teacher_logits = model(input_ids=teacher).logits[0, trained - 1 + HINDSIGHT_TOKENS]
    logits = model(input_ids=student).logits[0, trained - 1]
    log_s = torch.log_softmax(logits, dim=-1)
    log_t = torch.log_softmax(teacher_logits, dim=-1)
    kl = (log_s.exp() * (log_s - log_t)).sum(-1)  # KL(student ‖ teacher), the whole vocabulary
    kl.mean().backward()


def _step_trl(model: Any, student: Any, teacher: Any, trained: Any) -> None:
    import torch

    # the bench extra, imported by name: typed as Any whether or not it is installed where pyright runs
    loss_utils: Any = importlib.import_module("trl.experimental.sdpo.loss_utils")
    compute_topk_self_distillation_loss = loss_utils.compute_topk_self_distillation_loss

    with torch.no_grad():
        teacher_logits = model(input_ids=teacher).logits[:, trained - 1 + HINDSIGHT_TOKENS]
    logits = model(input_ids=student).logits[:, trained - 1]
    per_token = compute_topk_self_distillation_loss(
        logits, teacher_logits, distillation_topk=TOP_K, distillation_alpha=1.0, distillation_add_tail=True
    )
    per_token.mean().backward()


STEPS = {"agentsd": _step_agentsd, "agentsd_rows": _step_agentsd_rows, "naive": _step_naive, "trl": _step_trl}


def worker(path: str, model_path: str, tokens: int, iters: int) -> dict[str, Any]:
    model = _load(model_path)
    student, teacher, trained = _data(model, tokens)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    step = STEPS[path]
    warm = _data(model, 256)  # one short step first: lazy kernel set-up is not the path's cost
    step(model, *warm)
    times = []
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        step(model, student, teacher, trained)
        times.append(time.perf_counter() - started)
    return {
        "seconds": min(times),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loaded_rss_gib": loaded_rss,
        "flops": model_flops(model, tokens),
    }


def model_flops(model: Any, tokens: int) -> float:
    cfg = model.config
    hidden, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    embedding = model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    trained = tokens - tokens // 4
    teacher = tokens + HINDSIGHT_TOKENS

    def forward(n: int) -> float:  # matmuls per token, causal attention (QKᵀ and AV over half the square)
        return 2.0 * non_embedding * n + 2.0 * layers * hidden * n * n

    head = 2.0 * hidden * vocab * trained
    return 3 * (forward(tokens) + head) + forward(teacher) + head


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    import torch

    torch.set_num_threads(THREADS)
    a, b = torch.randn(size, size), torch.randn(size, size)
    _ = a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        _ = a @ b
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


# ---------------------------------------------------------------------------------------- parent


def run_child(python: str, args: list[str], rss_limit_gib: float, mmap_threshold: int = 0) -> dict[str, Any]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(THREADS),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "PYTHONPATH": str(REPO),
    }
    if mmap_threshold > 0:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    proc = subprocess.Popen(
        [python, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0.0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            peak = max(peak, rss_kib / 2**20)
        except (OSError, StopIteration, ValueError):
            pass
        if peak > rss_limit_gib:
            proc.kill()
            proc.wait()
            return {"error": f"killed at {peak:.1f} GiB RSS (limit {rss_limit_gib} GiB)"}
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:120]}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    parser.add_argument("--paths", nargs="+", default=["agentsd", "trl", "naive"], choices=sorted(STEPS))
    parser.add_argument("--iters", type=int, default=2, help="Timed steps per run (the fastest counts).")
    parser.add_argument("--trl-python", default=sys.executable, help="A Python with TRL (the bench extra).")
    parser.add_argument("--rss-limit-gib", type=float, default=21.0)
    parser.add_argument("--mmap-threshold", type=int, default=1 << 20, help="bytes; 0 = glibc's default")
    parser.add_argument("--worker", choices=[*sorted(STEPS), "peak"], help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "peak":
        print(json.dumps({"peak_flops": matmul_peak()}))
        return
    if args.worker:
        result = worker(args.worker, args.model_path, args.tokens[0], args.iters)
        print(json.dumps(result))
        return

    from agentsd.modelcache import resolve_model

    model_path = str(resolve_model("default"))
    if (
        "trl" in args.paths
        and subprocess.run([args.trl_python, "-c", "import trl"], capture_output=True).returncode
    ):
        sys.exit(f"--trl-python {args.trl_python} cannot import trl: run scripts/setup_bench.sh first")
    peak = run_child(sys.executable, ["--worker", "peak"], args.rss_limit_gib)["peak_flops"]
    print(
        f"fp32 matmul peak ({THREADS} threads): {peak / 1e9:.1f} GFLOP/s; "
        f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold or 'glibc default'}"
    )
    print(f"{'tokens':>6} {'path':>8} {'tokens/s':>9} {'peak RSS':>9} {'MFU':>6} ", end="")
    print(f"{'mem/trl':>8} {'speed/trl':>9}")
    for tokens in args.tokens:
        results: dict[str, dict[str, Any]] = {}
        for path in args.paths:
            python = args.trl_python if path == "trl" else sys.executable
            child = [
                "--worker",
                path,
                "--model-path",
                model_path,
                "--tokens",
                str(tokens),
                "--iters",
                str(args.iters),
            ]
            results[path] = run_child(python, child, args.rss_limit_gib, args.mmap_threshold)
        trl = results.get("trl", {})
        for path, r in results.items():
            if "error" in r:
                print(f"{tokens:>6} {path:>8} {r['error']}")
                continue
            speed = tokens / r["seconds"]
            mfu = r["flops"] / r["seconds"] / peak
            mem_ratio = r["peak_rss_gib"] / trl["peak_rss_gib"] if "peak_rss_gib" in trl else float("nan")
            speed_ratio = trl["seconds"] / r["seconds"] if "seconds" in trl else float("nan")
            print(
                f"{tokens:>6} {path:>8} {speed:>9.1f} {r['peak_rss_gib']:>7.2f}G {mfu:>6.3f} "
                f"{mem_ratio:>7.2f}x {speed_ratio:>8.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
