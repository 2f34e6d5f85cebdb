"""One run end to end into its folder: train or distil, score, calibrate, plot, write metrics last."""
