"""The command line of each script in scripts/: ``scripts/NAME.py`` is this
package's ``NAME.main``. Each module parses and checks its flags (one-line errors
before any work) and calls the package that does the work (``prep``, ``run``,
``evaluation``, ``experiments``); tests parse commands with the same parsers."""
