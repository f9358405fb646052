"""multid: shared plumbing for the re-implementation of "Not All Language Model Features Are Linear".

Only cross-cutting pieces live here: configuration (base dir, device), the model registry,
artifact IO (atomic writes, safe loading) and the error type scripts use for user mistakes.
The science lives in the four paper folders (intervention/, sae_multid_feature_discovery/,
reducibility_demos/, feature_deconstruction/).
"""

__version__ = "0.1.0"
