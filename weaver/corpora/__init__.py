"""Tools that build the corpora shipped in `weaver/data/resources` (and the chitchat rows written on first use).

Kept apart from `weaver.data` so a training run never imports a corpus builder; each module runs as
`python -m weaver.corpora.<name>`.
"""
