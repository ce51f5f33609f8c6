"""SAE features as emotion concepts: scores and the label rule (`rule`), its permutation
false-discovery rate and the thresholds chosen by it (`fdr`), surface-style covariates
that must not pass for a concept (`style`), labels and labels.json (`labels`),
top-activating contexts (`contexts`), labelling an SAE from a probe folder
(`labelling`), and the comparison of features with probe vectors (`compare`). Reads
probe, SAE and cache folders; knows nothing of runs or stages."""
