"""Experiments beyond one `dvc exp run`: one configuration over training seeds on DVC's queue
(`replicate`), a grid of configurations over seeds fanned out on a Ray cluster (`sweep`, with
`cells`, the work of one cell on a worker), the `-S` values checked exactly as DVC applies them
(`overrides`), and a failed experiment's workspace put back (`workspace`).
"""
