"""Steered replies and what they show: choosing a steering strength by sweeping it and
measuring effect and coherence (`calibration`), and the paper's behavioural experiments
at small scale (`behaviour`: scenarios, intensity, preferences, steered generation,
choice under pressure). It sits above `steering` and `reading`, so a steering vector
never imports what measures it. Each returns JSON-able numbers; the pipeline saves
them and the report draws them."""
