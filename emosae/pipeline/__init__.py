"""`emosae run`: the only layer that knows a run folder as a whole. The run's config,
composed of every stage's config, and its presets (`config`); each stage declared once
as name, inputs, config, function and outputs (`stages`); the resumable runner with its
content-hashed stage log (`runner`); the report's headline table as data (`headline`),
its plots (`plots`) and page (`report`); and shipping a finished run as the packaged
defaults (`ship`)."""
