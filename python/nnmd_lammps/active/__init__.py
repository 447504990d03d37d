"""Active learning: choosing the trajectory frames worth a reference calculation
(:mod:`.selection`, ``nnmd select``) and labelling them with any ASE calculator
(:mod:`.labelling`, ``nnmd label``)."""
