"""The SDK's version, in its own module so every other module can import it without cycles."""

__version__ = "0.1.0"
