"""The learning loop shared by the gate model, the skill controller and retention (ARCHITECTURE §6):
pure feature functions, small torch models, training with validation by conversation, and
artefacts (weights + manifest) that the service loads through one model port."""
