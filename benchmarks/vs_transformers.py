r"""irl_lm vs Hugging Face transformers (PyTorch) on the same CPU: train step, sampling, memory.

  python -m benchmarks vs_transformers                       # small (B 8, L 512, T 128) + tiny
  python -m benchmarks vs_transformers --cases=tiny --rounds=5 --sample_rounds=3
  python -m benchmarks vs_transformers --no_memory            # skip the peak-memory subprocesses
  python -m benchmarks vs_transformers --memory_only          # only them
  python -m benchmarks vs_transformers --remat=full --hf_gradient_checkpointing  # both recompute

Needs the `hf` extra (torch, transformers); irl_lm never imports them.

The same T5 1.1 (T5X's sizes, gated-GELU, untied output layer, one input embedding shared by both
stacks, no dropout), float32 activations and parameters on both sides, the same batch (B, L, T as
`common.CASES`: inputs 1/2..1 of L, EOS-terminated targets 1/2..1 of T), the same optimiser
(AdamW, lr 1e-3, no weight decay, no clipping) and the same loss (token-mean cross-entropy,
irl_lm's `objectives.MLE()`). For a fair peer: `torch.set_flush_denormal(True)` and torch uses
as many threads as the machine has cores (XLA's CPU client does too).

* train step: forward, backward and optimiser update; both alternate in one process, in a new
  random order each round (`common.interleaved_medians`): median seconds and tokens/s
  (B x (L + T) tokens per step) and the ratio irl_lm / transformers (< 1: irl_lm faster);
* sampling: exactly `T` new tokens per row at temperature 1 without top-k/top-p (irl_lm:
  `decoding.temperature_sample` with EOS disabled; transformers: `generate(do_sample=True,
  top_k=0, min_new_tokens=T, max_new_tokens=T)` with its KV cache); ratio transformers /
  irl_lm (> 1: irl_lm faster);
* host allocator: `--allocator` as `irl_lm.main` chooses it (auto: tcmalloc when installed,
  irl_lm/host_allocator.py), the same for both sides (one process; the memory processes inherit
  it); `--allocator=system` keeps glibc's malloc;
* peak memory: each of the four workloads in its own fresh process (warm-up + 2 runs), peak
  resident set size (VmHWM) and its growth over the process's size after the imports
  (`--workloads=train` for the train step's only);
* `--remat=POLICY`: irl_lm's `remat_policy` ('none', 'minimal', 'dots', 'full');
  `--hf_gradient_checkpointing`: transformers' `gradient_checkpointing_enable()` (each T5 block
  recomputed in the backward pass, like 'full'). Sampling is not affected by either.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

from irl_lm import decoding
from irl_lm.cpu import host_allocator
from irl_lm.training import objectives

LEARNING_RATE = 1e-3


def _status_mb(field: str) -> float:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024.0


def _peak_rss_mb() -> float:
  # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork and exec, so a child
  # would report its parent's peak when that was larger.
  return _status_mb("VmHWM")


def _current_rss_mb() -> float:
  return _status_mb("VmRSS")


def ours(case: common.Case, remat: str = "none") -> dict[str, Callable[[], Any]]:
  """irl_lm's blocking train step (layers rematerialised with `remat`) and sampler for `case`."""
  built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw",
                               learning_rate=LEARNING_RATE, dtype=jnp.float32,
                               remat_policy=remat, copy_params=False)
  sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                     max_decode_length=case.targets, temperature=1.0,
                                     eos_id=-1))
  enc, key = built["batch"]["encoder_input_tokens"], jax.random.key(0)
  # Like `generate` on the model being trained, the sampler reads the train state's current
  # parameters (no second copy of the weights in memory).
  return {"train": built["run"], "sample": lambda: jax.block_until_ready(
      sample(built["current_params"](), enc, key).tokens)}


def theirs(case: common.Case, checkpointing: bool = False) -> dict[str, Callable[[], Any]]:
  """transformers' train step (with gradient checkpointing if `checkpointing`) and `generate`
  for the same model, batch and optimiser."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_flush_denormal(True)
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = common.t5_model(case, jnp.float32).config
  hf_config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=0.0, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
      relative_attention_max_distance=cfg.relative_attention_max_distance,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(hf_config).float()
  if checkpointing:
    model.gradient_checkpointing_enable()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
  batch = common.synthetic_batch(case)
  input_ids = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
  attention_mask = input_ids != 0
  decoder_input_ids = torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)
  labels = torch.tensor(np.where(batch["decoder_loss_weights"] > 0,
                                 batch["decoder_target_tokens"], -100), dtype=torch.long)

  def train():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids, labels=labels)
    out.loss.backward()
    optimizer.step()
    return float(out.loss.detach())

  def sample():
    model.eval()
    with torch.inference_mode():
      return model.generate(input_ids=input_ids, attention_mask=attention_mask,
                            do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                            max_new_tokens=case.targets, min_new_tokens=case.targets)

  return {"train": train, "sample": sample}


def _build(system: str, case: common.Case, args: argparse.Namespace
           ) -> dict[str, Callable[[], Any]]:
  if system == "irl_lm":
    return ours(case, args.remat)
  return theirs(case, args.hf_gradient_checkpointing)


def child(system: str, workload: str, case_name: str, args: argparse.Namespace) -> None:
  """One workload in this (fresh) process; prints a JSON line with its peak memory."""
  case = common.CASES[case_name]
  if system == "transformers":
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  after_imports = _current_rss_mb()
  fn = _build(system, case, args)[workload]
  for _ in range(3):
    fn()
  print(json.dumps({"system": system, "workload": workload, "peak_mb": _peak_rss_mb(),
                    "after_imports_mb": after_imports}), flush=True)


def peak_memory(case_name: str, args: argparse.Namespace
                ) -> dict[tuple[str, str], dict[str, float]]:
  out = {}
  flags = [f"--remat={args.remat}"] + (["--hf_gradient_checkpointing"]
                                       if args.hf_gradient_checkpointing else [])
  for workload in args.workloads.split(","):
    for system in ("irl_lm", "transformers"):
      proc = subprocess.run(
          [sys.executable, "-m", "benchmarks.vs_transformers", f"--child={system}:{workload}",
           f"--cases={case_name}", *flags], cwd=common.ROOT, capture_output=True, text=True,
          check=False)
      lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
      if proc.returncode or not lines:
        raise RuntimeError(f"{system} {workload} failed:\n{proc.stderr[-2000:]}")
      out[system, workload] = json.loads(lines[-1])
  return out


def _print_peak_memory(case_name: str, args: argparse.Namespace) -> None:
  mem = peak_memory(case_name, args)
  for workload in args.workloads.split(","):
    a, b = mem["irl_lm", workload], mem["transformers", workload]
    grow_a = a["peak_mb"] - a["after_imports_mb"]
    grow_b = b["peak_mb"] - b["after_imports_mb"]
    print(f"  peak memory, {workload:6}: irl_lm {a['peak_mb']:.0f} MB (+{grow_a:.0f} over "
          f"imports), transformers {b['peak_mb']:.0f} MB (+{grow_b:.0f}); ratio "
          f"{a['peak_mb'] / b['peak_mb']:.2f} (growth {grow_a / max(grow_b, 1):.2f})"
          + ("; target <= 0.8" if workload == "train" else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small,tiny")
  parser.add_argument("--rounds", type=int, default=5, help="timed train-step rounds")
  parser.add_argument("--sample_rounds", type=int, default=3, help="timed sampling rounds")
  parser.add_argument("--no_memory", action="store_true")
  parser.add_argument("--memory_only", action="store_true", help="only the peak-memory processes")
  parser.add_argument("--allocator", default="auto",
                      help="auto | system | a library path (irl_lm/cpu/host_allocator.py)")
  parser.add_argument("--workloads", default="train,sample", help="of the memory processes")
  parser.add_argument("--remat", default="none", help="irl_lm's remat_policy")
  parser.add_argument("--hf_gradient_checkpointing", action="store_true",
                      help="transformers' gradient_checkpointing_enable()")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(*args.child.split(":"), args.cases, args)
    return 0
  env = host_allocator.preload_environment({**os.environ, host_allocator.ENV: args.allocator})
  if env is not None:  # choose the allocator before anything is allocated
    argv = sys.argv[1:] if argv is None else list(argv)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", "vs_transformers", *argv],
              env)
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__} ({jax.device_count()} x {jax.devices()[0].device_kind}), "
        f"torch {torch.__version__} ({os.cpu_count()} threads), transformers "
        f"{transformers.__version__}; float32; AdamW lr {LEARNING_RATE}; MLE loss; host allocator "
        f"{os.environ.get('LD_PRELOAD') or 'of the system'}; irl_lm remat_policy "
        f"{args.remat!r}, transformers gradient checkpointing "
        f"{'on' if args.hf_gradient_checkpointing else 'off'}")
  for case_name in args.cases.split(","):
    case = common.CASES[case_name]
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}", flush=True)
    if args.memory_only:
      _print_peak_memory(case_name, args)
      continue
    mine, peer = _build("irl_lm", case, args), _build("transformers", case, args)
    train = common.interleaved_medians({"irl_lm": mine["train"],
                                        "transformers": peer["train"]}, args.rounds)
    sample = common.interleaved_medians({"irl_lm": mine["sample"],
                                         "transformers": peer["sample"]}, args.sample_rounds)
    tokens = case.batch * (case.inputs + case.targets)
    new_tokens = case.batch * case.targets
    print(f"  {'':14} {'train step':>11} {'tokens/s':>9} | {'sample':>9} {'new tok/s':>9}")
    for system in ("irl_lm", "transformers"):
      t, s = train[system]["median"], sample[system]["median"]
      print(f"  {system:14} {t * 1e3:>9.0f}ms {tokens / t:>9.0f} | {s * 1e3:>7.0f}ms "
            f"{new_tokens / s:>9.0f}")
    step_ratio = train["irl_lm"]["median"] / train["transformers"]["median"]
    sample_ratio = sample["transformers"]["median"] / sample["irl_lm"]["median"]
    print(f"  train step irl_lm / transformers: {step_ratio:.2f} (target <= 0.7); "
          f"sampling transformers / irl_lm: {sample_ratio:.2f}x faster (target >= 3)")
    print(f"  (medians of {args.rounds} / {args.sample_rounds} interleaved rounds after a "
          f"warm-up; min step ratio "
          f"{train['irl_lm']['min'] / train['transformers']['min']:.2f})", flush=True)
    if not args.no_memory:
      _print_peak_memory(case_name, args)
    del mine, peer
  return 0


if __name__ == "__main__":
  sys.exit(main())
