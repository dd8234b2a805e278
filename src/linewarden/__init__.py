"""linewarden: subscriber identity headers that go only where they belong, and proof."""

__version__ = "0.1.0"
