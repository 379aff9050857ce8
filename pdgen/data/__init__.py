"""Data: the tokenizer (`pdgen.data.tokenizer`), BAGEL-style packing of trajectories (`pdgen.data.packing`,
its configs `pdgen.data.packing_config`, the token-budget packer `pdgen.data.token_budget`), the world-built
training subsets (what their builds share `pdgen.data.subset_build`; multi-turn `pdgen.data.multiturn`,
instruction-intermediate conflicts `pdgen.data.conflict` with `conflict_sample` and `self_sample`,
image-instruction alignment `pdgen.data.alignment`, the base stage `pdgen.data.base`, edits
`pdgen.data.edit`), their webdataset shards (`pdgen.data.shards`), how DataModules read (`pdgen.data.reading`:
`ReaderConfig`), the subsets' DataModules and the mixture (`pdgen.data.datamodules`), and the prompt sets
`pdgen predict` reads (`pdgen.data.prompts`).

Nothing is imported here, so that `import pdgen.data.packing` does not pay for modules it does not use.
"""
