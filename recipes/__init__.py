"""dan's recipes: one script per task (fusion, siamese, crossmodal), each a :class:`dan.engine.Task` and a
``main(cfg)``, and their YAML configs in ``configs/``. Installed as ``dan.recipes``; run with ``dan train``."""
