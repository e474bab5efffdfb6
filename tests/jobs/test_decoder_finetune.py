"""The decoder-only recipe (README, docs/guide.md) end to end: a Hugging Face Qwen2 checkpoint
(random, tiny, with its own tokenizer.json) fine-tuned with IQLearn on a JSONL file by
`gin/iqlearn_decoder_finetune.gin`, then used for inference."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUESTIONS = [f"what is {a} plus {b}?" for a in range(6) for b in range(6)]


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "irl_lm.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)


def _checkpoint(directory: str) -> int:
  """A random tiny Qwen2 (tied embeddings, q/k/v biases, GQA) and a byte-level BPE tokenizer
  trained here, saved as a Hugging Face checkpoint directory. Returns the vocabulary size."""
  tokenizers = pytest.importorskip("tokenizers")
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  corpus = [f"Question: {q}\nAnswer: {i}" for i, q in enumerate(QUESTIONS)]
  tok.train_from_iterator(corpus, tokenizers.trainers.BpeTrainer(
      vocab_size=320, special_tokens=["<pad>", "<|im_end|>"], show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(directory)
  tok.save(os.path.join(directory, "tokenizer.json"))
  vocab = tok.get_vocab_size()
  torch.manual_seed(0)
  config = transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
      tie_word_embeddings=True, eos_token_id=1, pad_token_id=0, use_sliding_window=False)
  transformers.Qwen2ForCausalLM(config).float().save_pretrained(directory)
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": "<|im_end|>"}, f)
  return vocab


@pytest.mark.slow
def test_finetune_an_imported_qwen2_on_jsonl_then_infer(tmp_path):
  ckpt = str(tmp_path / "qwen2")
  _checkpoint(ckpt)
  data = tmp_path / "train.jsonl"
  with open(data, "w") as f:
    for q in QUESTIONS:
      a, b = (int(w) for w in q.replace("?", "").split() if w.isdigit())
      f.write(json.dumps({"question": q, "answer": str(a + b)}) + "\n")
  run_dir = tmp_path / "run"
  common = ["--gin_file=gin/iqlearn_decoder_finetune.gin",
            f"--gin_bindings=CHECKPOINT = '{ckpt}'",
            f"--gin_bindings=local_files_task.train_path = '{data}'",
            "--gin_bindings=local_files_task.prompt_field = 'question'",
            "--gin_bindings=local_files_task.completion_field = 'answer'",
            "--gin_bindings=local_files_task.template = 'Question: {question}\\nAnswer:'",
            "--gin_bindings=train.feature_lengths = {'inputs': 16, 'targets': 8}",
            f"--gin_bindings=run.run_dir = '{run_dir}'"]
  # Learning rate 0: the run's parameters must stay exactly the imported ones.
  result = _main(*common, "--gin_bindings=TrainSettings.num_train_steps = 3",
                 "--gin_bindings=TrainSettings.log_every = 1",
                 "--gin_bindings=CheckpointSettings.every = 3",
                 "--gin_bindings=make_schedule.learning_rate = 0.0",
                 "--gin_bindings=EvalSettings.examples = 4",
                 "--gin_bindings=EvalSettings.batch_size = 4")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Validation (1 examples)" in result.stdout or "Validation (" in result.stdout

  from irl_lm.checkpoints import formats
  from irl_lm.models import decoder_only
  config = formats.config_from_checkpoint(ckpt)
  assert isinstance(config, decoder_only.DecoderOnlyConfig) and config.tie_embeddings
  assert config.qkv_bias and config.num_kv_heads == 2
  model = decoder_only.DecoderOnlyModel(config)
  abstract = jax.eval_shape(lambda r: model.init(r, {"decoder_input_tokens": (1, 4)}),
                            jax.random.key(0))
  imported = formats.load_params(ckpt, abstract)
  trained = formats.load_params(str(run_dir), abstract)
  jax.tree.map(np.testing.assert_array_equal, trained, imported)
  nll = [json.loads(line)["train/nll"] for line in open(run_dir / "metrics.jsonl")
         if "train/nll" in line]
  assert len(nll) == 3 and all(np.isfinite(nll))
  # A random model's NLL is about log(V) per token (V = 320: 5.8).
  assert 4.0 < nll[0] < 8.0

  inputs = tmp_path / "prompts.jsonl"
  inputs.write_text(json.dumps({"input": "Question: what is 2 plus 2?\nAnswer:"}) + "\n")
  # As the recipe's inference command: the checkpoint and run directory, no data settings.
  out = _main("--gin_file=gin/iqlearn_decoder_finetune.gin", f"--gin_bindings=CHECKPOINT = '{ckpt}'",
              f"--gin_bindings=run.run_dir = '{run_dir}'", "--gin_bindings=run.mode = 'infer'",
              f"--gin_bindings=infer.input_file = '{inputs}'")
  assert out.returncode == 0, out.stderr[-3000:]
  files = [f for f in os.listdir(run_dir) if f.startswith("infer_prompts")]
  assert len(files) == 1
  records = [json.loads(line) for line in open(run_dir / files[0])]
  assert len(records) == 1 and isinstance(records[0]["output"], str)
