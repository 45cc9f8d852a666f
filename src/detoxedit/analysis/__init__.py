"""Analyses of runs and edited models: figures of a run folder (`figures`), and the mechanism analysis
(`probe`: the toxic probe; `mechanism`: region toxicity, activation flow, logit lens; `detoxified`:
what a detoxified model changed; `analyze`: the `detoxedit analyze` command's work)."""
