"""SAE features as emotion concepts: scores and labels by story contrast (`labels`),
top-activating contexts (`contexts`), labelling an SAE from a probe folder
(`labelling`), and the comparison of features with probe vectors (`compare`). Reads
probe, SAE and cache folders; knows nothing of runs or stages."""
