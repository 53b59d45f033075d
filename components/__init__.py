"""The cloud layer: one Pulumi ComponentResource per file, declarative only.

``components.stack.build`` composes them; ``components.config.read_settings`` is the
one place stack config is read.
"""
