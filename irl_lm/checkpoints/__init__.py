"""Checkpoints: our runs' own, and other frameworks' model parameters.

  manager      the run checkpointer (Orbax): save every N steps, keep K, restore the newest
               intact TrainState (corrupt ones named and set aside), save failures in one
               sentence, the run directory's write probe; `CheckpointError`, the one error type
               of this package.
  integrity    checksums of every saved array, computed on the devices, verified on restore.
  lock         one job per run directory: `RunLock` (owner host, pid, heartbeat; stale rule).
  storage      what an OS / TensorStore storage error means, in a phrase (ENOSPC, EROFS, ...).
  formats      which format a path holds (`detect_format`) and `load_params` / `save_params`
               for any of them: T5X legacy, T5X Orbax, Hugging Face safetensors, irl_lm runs.
  t5x          T5X legacy (msgpack + zarr) and T5X Orbax, read and written.
  safetensors  Hugging Face directories (config.json + safetensors), read and written without
               torch.
  families     the model families these know; per family the names and config mapping live
               next to the model (`irl_lm.models.<family>_checkpoint`).
  leaves       `Leaf`, a lazily read array, shared by the readers.

Layering: this package may import `irl_lm.models`, never the reverse.
"""
