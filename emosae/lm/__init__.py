"""Language models as TransformerLens models: loading (`models`, the only module that
knows which TransformerLens class we use and how embedded GGUF weights are converted),
chat rendering and generation (`chat`), and hook names and right padding (`hooks`).
It knows nothing of emotions, SAEs or runs."""
