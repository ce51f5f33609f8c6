"""Sparse autoencoders from cached activations: the corpus mix and its contexts
(`contexts`), the sharded activation cache writer (`cache`) and reader (`reader`),
training with sae-lens (`training`), held-out metrics (`metrics`) and data-parallel
training under torchrun (`parallel`). Knows cache and checkpoint folders, not runs or
stages; it must not import from `probes`, `features`, `steering` or `pipeline`."""
