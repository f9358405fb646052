"""multid: the library behind the re-implementation of "Not All Language Model Features Are Linear".

All of the computation lives here, in topic subpackages (tasks, circles, patching, figures, reducibility,
deconstruction, sae) over a small core (configuration, errors, IO, the model registry, stages); the four
paper folders (intervention/, reducibility_demos/, feature_deconstruction/, sae_multid_feature_discovery/)
hold only the upstream-named scripts and notebooks, thin command lines over it (docs/layout.md).
"""

__version__ = "0.1.0"
