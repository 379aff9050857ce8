"""Data: the tokenizer (`pdgen.data.tokenizer`), BAGEL-style packing of trajectories
(`pdgen.data.packing`), the world-built training subsets (`pdgen.data.build`), their webdataset shards
(`pdgen.data.shards`) and the DataModules that feed packs to training (`pdgen.data.datamodules`).

Nothing is imported here, so that `import pdgen.data.packing` does not pay for modules it does not use.
"""
