"""Models: the BAGEL trunk (`pdgen.models.bagel`), the packed mask rule (`pdgen.models.mask`) and packed
attention (`pdgen.models.attention`)."""
