"""Image datasets: readers for the raw formats, one-class splits, synthetic anomalies."""
