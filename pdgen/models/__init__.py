"""Models: the BAGEL trunk (`pdgen.models.bagel`) and packed attention (`pdgen.models.attention`)."""
