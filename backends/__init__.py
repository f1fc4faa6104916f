"""Built-in backends. Each sub-package is a pluggy plugin registered through the `edgec.backends` entry point."""
