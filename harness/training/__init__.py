"""Training a DeCo-Diff UNet: the Accelerate loop and everything it alone changes with.

- `loop`: `train()`, the DDP loop (resume, accumulation, EMA, checkpoints, preemption);
- `feed`: the epoch's optimizer steps, dealt evenly over ranks and loader workers;
- `latent_cache`: the training set encoded once by the frozen VAE;
- `checkpoint`: saving and loading models and exact training state;
- `model_cache`: a trained model keyed by everything that shaped it, reused across runs;
- `spec`: that everything, as JSON (the cache key's input, what a resume must match);
- `init_weights`, `model_import`: weights from elsewhere (LDM, the authors' checkpoints);
- `vae_fit`: the VAE a run uses (pretrained folder or a small one trained here, or fine-tuned);
- `vae_generic`: the generic small VAE the project ships, trained on scikit-image's bundled pictures;
- `distributed`, `preemption`, `optimizer`, `schedules`, `ema`, `rng_state`: the loop's parts.

May import: `decodiff.models`, `decodiff.datasets`, the run-level modules of `decodiff.harness`
(config, data, methods, progress, provenance, errors); never `evaluation`, `sweep`, `commands` or `bench`.
"""
