"""The SAE half's figures: the interactive cluster html, the paper's cluster panels (Figures 1, 12, 13 and the
rebuttal grid), and what a figure run works on (figure_context)."""
