"""Work that never runs in a worker: training corpora, distillation runs, evaluation, reports.

The live modules (extractor, session, analyzer, lifecycle, tensors, pipeline) import nothing from
here; a test checks it."""
