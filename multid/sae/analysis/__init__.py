"""The SAE half's computations over the data: SAE training, clustering of decoder directions and its stability,
cluster reconstructions and their PCA, the reducibility scan (M and S per PCA plane, in batches), the calendar
cluster metrics and the day / month phrase projections. Imports data, never figures or runners."""
