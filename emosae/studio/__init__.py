"""`emosae studio`, the local web app: chat with a model while it streams its reply token
by token, colour every token by a concept's conversation z-score (`emosae.read`), steer
with sliders bounded by each vector's calibrated safe range, and open a run's feature
dashboards from the SAE features active at a token. `session` owns the model-side work
(generation with per-step steering hooks, readings, slider ranges, SAE features);
`server` owns HTTP (FastAPI routes, the one-generation-at-a-time lock, disconnects) and
serves the page in `static/`. It reads run and checkpoint folders and never writes them;
it must not be imported by any library layer (only `emosae.cli.studio` uses it)."""

from emosae.studio.session import Studio

__all__ = ["Studio"]
