"""Data: the tokenizer (`pdgen.data.tokenizer`), BAGEL-style packing of trajectories
(`pdgen.data.packing`), the world-built training subsets (multi-turn `pdgen.data.build`, instruction-
intermediate conflicts `pdgen.data.conflict`, image-instruction alignment `pdgen.data.alignment`), their
webdataset shards (`pdgen.data.shards`), the DataModules that feed packs to training, the mixture included
(`pdgen.data.datamodules`), and the prompt sets `pdgen predict` reads (`pdgen.data.prompts`).

Nothing is imported here, so that `import pdgen.data.packing` does not pay for modules it does not use.
"""
