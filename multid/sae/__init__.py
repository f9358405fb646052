"""SAE feature discovery (paper section 4): occurrences of SAE features over a corpus, clusters of decoder
directions, cluster reconstructions and their PCA, figures, and the reducibility scan of every cluster."""
