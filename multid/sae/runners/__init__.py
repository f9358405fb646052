"""The SAE pipeline's stages as functions: `run_<stage>(config) -> result` (docs/layout.md).

Each config is a frozen dataclass whose fields are its upstream-named script's arguments (multid.commands);
`config.command()` is the command line a user runs for the same stage. The scripts in
sae_multid_feature_discovery/ parse their arguments into the config and call the runner; `make discover`
(multid.discover) calls the runners in one process and passes their results on.
"""
