r"""Converts checkpoints between formats: `python -m irl_lm.convert --from A --to B`.

T5 1.1 encoder-decoders and decoder-only (Llama / Mistral / Qwen2-style) models.

  # A T5X checkpoint (legacy msgpack + zarr, or Orbax) to Hugging Face safetensors:
  python -m irl_lm.convert --from=/ckpt/t5_1_1_xl/checkpoint_1000000 --to=/models/t5_1_1_xl_hf
  # An irl_lm run (its newest checkpoint) to a T5X legacy checkpoint:
  python -m irl_lm.convert --from=runs/iqlearn_xl-1a2b3c4d --to=gs://bucket/xl/checkpoint_20000 \
      --format=t5x
  # A Hugging Face directory to a T5X Orbax checkpoint:
  python -m irl_lm.convert --from=/models/flan_t5_base --to=/ckpt/checkpoint_0 --format=orbax

Flags:
  --from    source checkpoint; its format is detected (see checkpoints.formats.detect_format).
  --to      output directory: a Hugging Face model directory (config.json + model.safetensors),
            or a T5X checkpoint directory (`checkpoint` msgpack + zarr arrays for 't5x',
            `state/` for 'orbax').
  --format  hf (default), t5x or orbax.
  --size    T5 1.1 preset the source must be ('small', 'xl', ...); by default the model's
            dimensions are read from the checkpoint itself.
  --dtype   float32 (default) or bfloat16: stored dtype of T5X outputs (Hugging Face: float32).
  --step    step recorded in T5X outputs (default: the source's step, else 0).
Only model parameters are converted (no optimiser state).
"""

from __future__ import annotations

from typing import Optional, Sequence

from absl import app, flags

from irl_lm import errors

FROM = flags.DEFINE_string("from", None, "Source checkpoint (any supported format).")
TO = flags.DEFINE_string("to", None, "Output directory.")
FORMAT = flags.DEFINE_enum("format", "hf", ["hf", "t5x", "orbax"], "Output format.")
SIZE = flags.DEFINE_enum("size", None, ["tiny", "small", "base", "large", "xl", "xxl"],
                         "T5 1.1 size preset of the source (default: read from its shapes).")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                          "Stored dtype of T5X outputs.")
STEP = flags.DEFINE_integer("step", None, "Step recorded in T5X outputs.")


def convert(from_path: str, to_path: str, *, format: str = "hf", size: Optional[str] = None,
            dtype: str = "float32", step: Optional[int] = None) -> dict:
  """Reads the parameters of any supported checkpoint and writes them in `format`.

  Args:
    from_path: source checkpoint path (T5X legacy or Orbax, Hugging Face, irl_lm run).
    to_path: output directory.
    format: 'hf', 't5x' or 'orbax'.
    size: T5 1.1 preset the source must be; None infers the dimensions from the checkpoint.
    dtype: 'float32' or 'bfloat16' (T5X outputs only).
    step: step recorded in T5X outputs (default the source's, else 0).
  Returns:
    {'source': CheckpointSource, 'config': the model config (T5Config), 'size': preset name
     or None, 'family': the `checkpoints.families` name, 'param_count': int}.
  Raises:
    CheckpointError: unreadable source, or one that is not a T5 1.1 model of `size`.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from irl_lm.checkpoints import families, formats, safetensors
  from irl_lm.checkpoints.manager import CheckpointError
  from irl_lm.models import lora

  f32 = {"activation_dtype": jnp.float32}
  source = formats.detect_format(from_path)
  shapes = formats.read_shapes(source)
  recorded = formats.run_model_config(source, **f32)
  if source.format == "hf":
    family, config = safetensors.hf_family_and_config(source.path, **f32)
  elif recorded is not None:  # an irl_lm run: the config it was trained with
    family, config = families.for_config(recorded), recorded
  else:
    family = families.for_shapes(shapes) or families.get(families.DEFAULT_FAMILY)
    config = family.infer_config(shapes, **f32)
  if size is not None:
    vocab = {"vocab_size": config.vocab_size} if config is not None else {}
    config = family.preset(size, **vocab, **f32)
  if config is None:
    cause = family.likely_cause(shapes, {})
    raise CheckpointError(
        f"the {source.describe()} does not hold the parameter tree of a known model family "
        f"({', '.join(families.FAMILIES)}; found e.g. {', '.join(list(shapes)[:3])})"
        f"{'; ' + cause if cause else ''}.")
  model = family.make_model(config)
  abstract = jax.eval_shape(lambda rng: model.init(rng, family.init_shapes), jax.random.key(0))
  lora_config = formats.run_lora_config(source)
  if lora_config is not None:  # a LoRA run: its adapters folded into the base
    wrapped = lora.LoraModel(model, lora_config.rank, lora_config.alpha, lora_config.targets)
    stored = jax.eval_shape(lambda rng: wrapped.init(rng, family.init_shapes),
                            jax.random.key(0))
    params = wrapped.merge(formats.load_params(source, stored))
  else:
    params = formats.load_params(source, abstract, family=family.name)
  out_step = step if step is not None else (source.step or 0)
  formats.save_params(params, to_path, format, config=config, step=out_step, dtype=dtype)
  return {"source": source, "config": config, "size": family.size_name(config),
          "family": family.name,
          "param_count": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract)))}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected argument(s) {' '.join(argv[1:])}: name the checkpoints with "
                     "--from and --to (python -m irl_lm.convert --help).")
  if not FROM.value or not TO.value:
    errors.exit_with("both --from and --to are required, e.g. python -m irl_lm.convert "
                     "--from=runs/<run> --to=/models/out (--help lists every flag).")
  from irl_lm.checkpoints import formats
  try:
    summary = convert(FROM.value, TO.value, format=FORMAT.value, size=SIZE.value,
                      dtype=DTYPE.value, step=STEP.value)
  except errors.UserError as e:  # a file or flag: one clear sentence, no traceback.
    errors.exit_with(str(e))
  family = {"t5_1_1": "T5 1.1", "llama": "decoder-only"}.get(summary["family"],
                                                             summary["family"])
  size = f"{family} '{summary['size']}'" if summary["size"] else family
  print(f"converted the {summary['source'].describe()} ({size}, "
        f"{summary['param_count']:,} parameters) to "
        f"{formats.FORMAT_NAMES[FORMAT.value]} at {TO.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=errors.flags_parser("python -m irl_lm.convert", __doc__, __name__))
