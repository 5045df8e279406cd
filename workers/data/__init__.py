"""The task's data, prepared once per run and cached: preparation, and data files shipped in packages."""
