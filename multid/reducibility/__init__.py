"""The reducibility indices of the paper (section 3): the epsilon-mixture index M and the separability index S."""
