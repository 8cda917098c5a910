"""The pipeline as written: its model, how YAML and Python build it, parameters and templates,
rendering a task for one run, the structural and semantic checks, and the generated reference.

Everything here is a pure function of a definition: nothing reads the catalog or moves data.
"""
