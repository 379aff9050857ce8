"""Data: the tokenizer (`pdgen.data.tokenizer`) and BAGEL-style packing of trajectories
(`pdgen.data.packing`).

Nothing is imported here, so that `import pdgen.data.packing` does not pay for modules it does not use.
"""
