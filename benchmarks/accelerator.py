r"""GPU check: irl_lm beside transformers + torch, T5 1.1 base and the 1B decoder-only model.

  python benchmarks/accelerator.py                 # realistic shapes on the default device
  python benchmarks/accelerator.py --cpu-dry-run   # tiny shapes on the CPU: checks that it runs
  python benchmarks/accelerator.py --models=t5 --no-torch --json=accelerator.json

For each model (random initialisation, no weights; parameters float32, activations bfloat16 on
both sides, float32 in the dry run; AdamW, lr 1e-3; a synthetic batch of full-length prompts and
EOS-terminated continuations):
* irl_lm: `step.make_train_step` for MLE, then offline IQLearn (td_weight 0.1), each timed
  after one compiling run (medians); step time, tokens/s (B x (L + T) per step), MFU
  (`flops.train_flops` over `flops.peak_flops` of the device; '-' for an unknown device), the
  IQLearn / MLE step ratio; `decoding.temperature_sample` of exactly T new tokens per row at
  temperature 1 (EOS disabled): new tokens/s; peak device memory of MLE training and sampling;
* transformers + torch (the `hf` extra): the same model (`T5ForConditionalGeneration`,
  `LlamaForCausalLM`) and batch, `torch.autocast` bfloat16 over float32 parameters, fused AdamW,
  the same token-mean cross-entropy; `generate(do_sample=True, top_k=0, min_new_tokens=T,
  max_new_tokens=T)`; `torch.cuda.max_memory_allocated`. Its decoder computes logits over all
  L + T positions in training (irl_lm: the T continuation positions).

Each (system, model) runs in its own process, so memory peaks are separate and jax and torch do
not share the device's memory; `--budget_s` bounds the whole run (a process that would run past
it is stopped and reported).
Shapes: T5 1.1 base B=32, L=512, T=128, V=32128; decoder-only 1B (Llama-3.2-1B's shape) B=8,
L=512, T=128, V=128256. `--cpu-dry-run`: the tiny presets, B=4, L=32, T=8, V=512.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

SHAPES = {  # model -> (irl_lm size, B, L, T, V)
    "t5": ("base", 32, 512, 128, 32128),
    "decoder": ("1b", 8, 512, 128, 128256),
}
DRY_RUN_SHAPES = {"t5": ("tiny", 4, 32, 8, 512), "decoder": ("tiny", 4, 32, 8, 512)}
LEARNING_RATE = 1e-3


def synthetic_tokens(batch: int, inputs: int, targets: int, vocab: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
  """int32 prompts [B, L] and continuations [B, T]: ids in [3, V), EOS (1) at the end."""
  rs = np.random.RandomState(seed)
  prompts = rs.randint(3, vocab, size=(batch, inputs)).astype(np.int32)
  continuations = rs.randint(3, vocab, size=(batch, targets)).astype(np.int32)
  continuations[:, -1] = 1
  return prompts, continuations


def interleaved_medians(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
  """Median seconds of each fn: one (compiling) run each, then `rounds` rounds in a new random
  order per round."""
  for fn in fns.values():
    fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  order, shuffler = list(fns), random.Random(0)
  for _ in range(rounds):
    shuffler.shuffle(order)
    for name in order:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(ts) for name, ts in times.items()}


def _config(model: str, shape: tuple, dtype: Any) -> Any:
  from irl_lm.models import decoder_only, t5  # pylint: disable=g-import-not-at-top
  size, _, _, _, vocab = shape
  make = t5.t5_1_1_config if model == "t5" else decoder_only.decoder_only_config
  return make(size, vocab_size=vocab, activation_dtype=dtype)


def _dtype_name(dry_run: bool) -> str:
  # bfloat16 is what accelerators run; CPUs run it slowly (the dry run checks code, not speed).
  return "float32" if dry_run else "bfloat16"


def run_irl_lm(model_name: str, shape: tuple, rounds: int, dry_run: bool) -> dict[str, Any]:
  """irl_lm's MLE and IQLearn train steps and sampler for one model, in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from irl_lm import decoding  # pylint: disable=g-import-not-at-top
  from irl_lm.models import decoder_only, flops, t5  # pylint: disable=g-import-not-at-top
  from irl_lm.partitioning import Partitioner  # pylint: disable=g-import-not-at-top
  from irl_lm.training import objectives, optimizers  # pylint: disable=g-import-not-at-top
  from irl_lm.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from irl_lm.training import step as step_lib  # pylint: disable=g-import-not-at-top

  _, B, L, T, _ = shape
  config = _config(model_name, shape, getattr(jnp, _dtype_name(dry_run)))
  model = (t5.EncoderDecoderModel(config) if model_name == "t5"
           else decoder_only.DecoderOnlyModel(config))
  prompts, continuations = synthetic_tokens(*shape[1:])
  batch = jax.device_get(model.teacher_forcing_batch(jnp.asarray(prompts),
                                                     jnp.asarray(continuations)))
  shapes = model.input_shapes(B, {"inputs": L, "targets": T})
  partitioner = Partitioner((-1, 1))
  schedule = optimizers.make_schedule("constant", learning_rate=LEARNING_RATE)
  tx = optimizers.make_optimizer("adamw", schedule=schedule)
  device_batch = {k: jax.device_put(v, partitioner.batch_sharding()) for k, v in batch.items()}
  holder: dict[str, Any] = {}

  def timed_steps(objective: Any) -> float:
    layout = state_lib.build_state_layout(model, tx, partitioner, shapes, objective=objective)
    step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                    partitioner=partitioner, shardings=layout.shardings)
    holder["state"] = layout.init_fn()

    def run():
      holder["state"], metrics = step(holder["state"], device_batch)
      jax.block_until_ready(metrics)
    return interleaved_medians({"step": run}, rounds)["step"]

  start = time.perf_counter()
  # MLE and sampling first, so the memory peak is that of one model's training and sampling
  # (as torch's); then IQLearn, with MLE's state freed.
  times = {"mle": timed_steps(objectives.MLE())}
  sample = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=T,
                                     temperature=1.0, eos_id=-1))
  device_prompts = jnp.asarray(prompts)
  sample_fn = lambda: jax.block_until_ready(  # noqa: E731
      sample(holder["state"].params, device_prompts, jax.random.key(0)).tokens)
  times["sample"] = interleaved_medians({"sample": sample_fn}, max(2, rounds // 2))["sample"]
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(holder["state"].params))
  del holder["state"]
  times["iqlearn"] = timed_steps(objectives.IQLearn(td_weight=0.1))
  peak = flops.peak_flops(device.device_kind)
  train_flops = flops.train_flops(config, B, {"inputs": L, "targets": T})
  return {"system": "irl_lm", "model": model_name, "params": n_params,
          "device": f"{device.device_kind} (jax {jax.__version__})",
          "step_s": times["mle"], "iqlearn_step_s": times["iqlearn"],
          "tokens_per_s": B * (L + T) / times["mle"],
          "mfu": train_flops / times["mle"] / peak if peak else None,
          "sample_s": times["sample"], "sample_tokens_per_s": B * T / times["sample"],
          "peak_memory_bytes": stats.get("peak_bytes_in_use"),
          "seconds": time.perf_counter() - start}


def run_torch(model_name: str, shape: tuple, rounds: int, dry_run: bool) -> dict[str, Any]:
  """The same model, batch and optimiser in transformers + torch, in this process."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from irl_lm.models import flops  # pylint: disable=g-import-not-at-top

  _, B, L, T, V = shape
  cfg = _config(model_name, shape, jnp.float32)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cpu":  # the dry run checks code, not speed: one thread, no denormals
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
  torch.manual_seed(0)
  if model_name == "t5":
    hf_config = transformers.T5Config(
        vocab_size=V, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
        num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    hf_config.tie_word_embeddings = False  # T5 1.1's output layer is its own (set after init)
    model = transformers.T5ForConditionalGeneration(hf_config)
  else:
    hf_config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=cfg.emb_dim, intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_epsilon,
        tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=L + T,
        pad_token_id=0, bos_token_id=0, eos_token_id=1)
    model = transformers.LlamaForCausalLM(hf_config)
  model = model.to(device=device, dtype=torch.float32)
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0,
                                fused=device.type == "cuda")
  prompts, continuations = (torch.tensor(a, dtype=torch.long, device=device)
                            for a in synthetic_tokens(*shape[1:]))
  if model_name == "t5":
    inputs = {"input_ids": prompts, "decoder_input_ids": torch.nn.functional.pad(
        continuations[:, :-1], (1, 0)), "labels": continuations}
    generate_ids = {"input_ids": prompts}
  else:
    labels = torch.cat([torch.full_like(prompts, -100), continuations], dim=1)
    inputs = {"input_ids": torch.cat([prompts, continuations], dim=1), "labels": labels}
    generate_ids = {"input_ids": prompts, "attention_mask": torch.ones_like(prompts)}
  autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                               enabled=not dry_run)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

  def train():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    sync()

  def sample():
    model.eval()
    with torch.inference_mode(), autocast():
      model.generate(**generate_ids, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                     max_new_tokens=T, min_new_tokens=T)
    sync()

  start = time.perf_counter()
  step_s = interleaved_medians({"train": train}, rounds)["train"]
  sample_s = interleaved_medians({"sample": sample}, max(2, rounds // 2))["sample"]
  peak = flops.peak_flops(torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
  train_flops = flops.train_flops(cfg, B, {"inputs": L, "targets": T})
  return {"system": "torch", "model": model_name,
          "device": f"{device} (torch {torch.__version__}, transformers "
                    f"{transformers.__version__})",
          "step_s": step_s, "tokens_per_s": B * (L + T) / step_s,
          "mfu": train_flops / step_s / peak if peak else None,
          "sample_s": sample_s, "sample_tokens_per_s": B * T / sample_s,
          "peak_memory_bytes": (torch.cuda.max_memory_allocated() if device.type == "cuda"
                                else None),
          "seconds": time.perf_counter() - start}


def _child(args: argparse.Namespace) -> int:
  system, model_name = args.child.split(":")
  shape = (DRY_RUN_SHAPES if args.cpu_dry_run else SHAPES)[model_name]
  run = run_irl_lm if system == "irl_lm" else run_torch
  print(json.dumps(run(model_name, shape, args.rounds, args.cpu_dry_run)), flush=True)
  return 0


def _spawn(system: str, model_name: str, args: argparse.Namespace, timeout: float
           ) -> dict[str, Any]:
  """Runs one (system, model) in a fresh process; its JSON line, or {'error': why}."""
  env = dict(os.environ)
  if args.cpu_dry_run:
    env["JAX_PLATFORMS"] = "cpu"
    env["CUDA_VISIBLE_DEVICES"] = ""
  elif system == "torch":
    env["JAX_PLATFORMS"] = "cpu"  # jax only reads configs there; the GPU is torch's
  command = [sys.executable, os.path.abspath(__file__), f"--child={system}:{model_name}",
             f"--rounds={args.rounds}"] + (["--cpu-dry-run"] if args.cpu_dry_run else [])
  try:
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"stopped after {timeout:.0f} s (the --budget_s left for it)"}
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  if out.returncode or not lines:
    tail = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
    return {"error": tail[:300]}
  return json.loads(lines[-1])


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
  """`value * scale` formatted with `spec`; '-' (right-aligned to spec's width) for None."""
  if value is None:
    return "-".rjust(int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0))
  return format(value * scale, spec)


def _print_table(model_name: str, shape: tuple, results: dict[str, dict[str, Any]],
                 dtype: str) -> None:
  size, B, L, T, V = shape
  title = {"t5": "T5 1.1", "decoder": "decoder-only"}[model_name]
  n_params = results.get("irl_lm", {}).get("params")
  print(f"\n{title} {size} ({_fmt(n_params, '.1f', 1e-6)}M parameters), B={B}, L={L}, T={T}, "
        f"V={V}, {dtype} activations, AdamW")
  print(f"  {'':8} {'step ms':>9} {'tokens/s':>10} {'MFU':>6} {'IQL/MLE':>8} "
        f"{'sample ms':>10} {'new tok/s':>10} {'peak GiB':>9}")
  for system, r in results.items():
    if "error" in r:
      print(f"  {system:8} failed: {r['error']}")
      continue
    ratio = r["iqlearn_step_s"] / r["step_s"] if "iqlearn_step_s" in r else None
    print(f"  {system:8} {_fmt(r['step_s'], '9.1f', 1e3)} {_fmt(r['tokens_per_s'], '10.0f')} "
          f"{_fmt(r['mfu'], '6.1%')} {_fmt(ratio, '8.3f')} {_fmt(r['sample_s'], '10.1f', 1e3)} "
          f"{_fmt(r['sample_tokens_per_s'], '10.0f')} "
          f"{_fmt(r['peak_memory_bytes'], '9.2f', 2.0**-30)}")
  for system, r in results.items():
    if "device" in r:
      print(f"  {system}: {r['device']}, {r['seconds']:.0f} s after imports", flush=True)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cpu-dry-run", action="store_true",
                      help="tiny shapes on the CPU (checks the script, not the speed)")
  parser.add_argument("--models", default="t5,decoder", help="comma-separated: t5, decoder")
  parser.add_argument("--rounds", type=int, default=5, help="timed train-step rounds")
  parser.add_argument("--no-torch", action="store_true", help="skip transformers + torch")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="wall-clock bound of the whole run in seconds (default 450; 1800 "
                      "with --cpu-dry-run)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    return _child(args)
  budget = args.budget_s or (1800.0 if args.cpu_dry_run else 450.0)
  deadline = time.monotonic() + budget
  systems = ["irl_lm"] + ([] if args.no_torch else ["torch"])
  all_results = {}
  for model_name in args.models.split(","):
    shape = (DRY_RUN_SHAPES if args.cpu_dry_run else SHAPES)[model_name]
    results = {}
    for system in systems:
      left = deadline - time.monotonic()
      results[system] = (_spawn(system, model_name, args, left) if left > 5
                         else {"error": "skipped: --budget_s spent"})
    _print_table(model_name, shape, results, _dtype_name(args.cpu_dry_run))
    all_results[model_name] = results
  if args.json:
    with open(args.json, "w") as f:
      json.dump(all_results, f, indent=1)
  failed = [f"{s}:{m}" for m, rs in all_results.items() for s, r in rs.items() if "error" in r]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
