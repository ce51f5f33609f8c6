"""Feature dashboards: static HTML pages of SAE features (density histogram, top and
band-sampled contexts with per-token activations, logit lens, AUROC per concept,
cosines to probe vectors) and an index grouped by concept, plus an export in
Neuronpedia's feature-upload shape. Collecting the data (`data`), the HTML (`pages`)
and the export (`neuronpedia`) are separate; `build` writes a dashboard folder. Reads
SAE, label, probe and cache folders through their `emosae.core.layout` file objects;
knows nothing of runs or stages, and never serves or fetches anything."""

from emosae.dashboard.build import build_dashboard
from emosae.dashboard.data import DashboardConfig, FeatureData

__all__ = ["DashboardConfig", "FeatureData", "build_dashboard"]
