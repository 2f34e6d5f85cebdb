"""The paper's studies as grids of runs: specifications, execution, the results store and the study report."""
