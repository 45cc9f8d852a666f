"""Analyses of runs and edited models: figures of a run folder (`figures`), and the mechanism analysis
(toxic probe, region toxicity, information flow) as it is added."""
