"""The reducibility indices of the paper (section 3): the epsilon-mixture index M and the separability index S."""

from multid.reducibility.calibration import PlaneCalibration, benjamini_hochberg, calibrate_plane
from multid.reducibility.exact import ExactMixtureResult, mixture_index_exact

__all__ = ["ExactMixtureResult", "PlaneCalibration", "benjamini_hochberg", "calibrate_plane", "mixture_index_exact"]
