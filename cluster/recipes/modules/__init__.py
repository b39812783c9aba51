"""Recipe modules, one file per PYME module family; :mod:`..registry` lists the allowed ones."""
