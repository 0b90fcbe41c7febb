"""Fine-tuning STAGE models with Lightning (docs/method.md §6).

- `config`: `TrainConfig` (YAML + dotted `key=value` overrides, validated);
- `module`: `StageTrainingModule` (the LightningModule: encoding, dropouts, layout, loss);
- `datamodule`: `StageDataModule` (stems or pre-tokenised shards; resumable `StepSampler`);
- `tokens`: the pre-tokenised uint16 shard format (`TokenWriter`, `TokenDataset`);
- `run`: `train(config, resume=...)`, what `stage train` calls;
- `commands`: the `stage train` and `stage tokenize` CLI.

Nothing is imported here, so `import stage.train.config` stays light.
"""
