"""The SAE half's data: where a run's artifacts live (run_layout), file formats and stores (the occurrence dataset,
cluster files), text sources and the local corpus, tokenizers, token labels, and loading SAEs. Imports only the
core and multid.sae.stage_configs."""
