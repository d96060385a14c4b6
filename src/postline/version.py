"""postline's version, in a module of its own so that the low layers (the state's schema
records, the status page) can name it without importing the package's facade."""

__version__ = "0.1.0"
